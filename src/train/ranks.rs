//! The processes a training run spans: one process, or MPI ranks (cargo feature `mpi`), one a GPU,
//! started by `mpirun` or Slurm's `srun` with the flags of one process. Ranks share each batch's
//! gradient shares (`Trainer::sharing`) and move them with MPI's data-movement collectives: an
//! all-gather of bytes, never an MPI floating-point reduction, whose order the library chooses.
//! Rank 0 alone writes; every rank checks the launch and, at checkpoints, that its weights are
//! rank 0's.

use std::ops::Range;

use crate::train::trainer::SharePart;
use crate::{Error, Result};

/// The launcher variables that say how many processes a launch started (Open MPI's, MPICH's and
/// Slurm's PMI, a Slurm job step's, torchrun's).
const WORLD_SIZE_VARS: [&str; 4] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS", "WORLD_SIZE"];

/// The variables that say which process of its node this one is.
const LOCAL_RANK_VARS: [&str; 4] =
    ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "LOCAL_RANK"];

/// The processes a launch started, by the launcher's variables (the first set, with its name).
pub fn launched_size(var: impl Fn(&str) -> Option<String>) -> Option<(&'static str, usize)> {
    WORLD_SIZE_VARS.iter().find_map(|&k| var(k).and_then(|v| v.trim().parse().ok()).map(|n| (k, n)))
}

/// This process's index among its node's, by the launcher's variables (0 where none says).
pub fn local_rank(var: impl Fn(&str) -> Option<String>) -> usize {
    LOCAL_RANK_VARS.iter().find_map(|&k| var(k).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
}

/// Checks that MPI's world is the launch's: a launch of N processes whose ranks each see a world
/// of 1 (a binary without MPI, or an MPI the launcher's does not match) would be N runs writing
/// one folder.
pub fn check_launch(world: usize, var: impl Fn(&str) -> Option<String>, built_with_mpi: bool) -> Result<()> {
    match launched_size(var) {
        Some((name, n)) if n > 1 && world != n => Err(Error::Invalid(if built_with_mpi {
            format!(
                "the launcher started {n} processes ({name}={n}), but MPI sees a world of {world}: \
                 this binary's MPI is not the launcher's (mpirun from the Open MPI it was built with, \
                 or srun --mpi=pmix with a matching MPI)"
            )
        } else {
            format!(
                "the launcher started {n} processes ({name}={n}), but this binary was built without MPI: \
                 cargo build --release --features mpi"
            )
        })),
        _ => Ok(()),
    }
}

/// The shares of `shares` that `rank` of `size` computes: a contiguous run of them.
pub fn own_shares(shares: usize, rank: usize, size: usize) -> Result<Range<usize>> {
    if size == 0 || !shares.is_multiple_of(size) {
        return Err(Error::Invalid(format!(
            "{size} ranks cannot share the run's {shares} gradient shares (--grad-shards): the ranks must divide them"
        )));
    }
    let per = shares / size;
    Ok(rank * per..(rank + 1) * per)
}

/// A 64-bit FNV-1a hash of f32 values' bits: what ranks compare at checkpoints.
pub fn checksum(values: impl IntoIterator<Item = f32>) -> u64 {
    values.into_iter().fold(0xcbf2_9ce4_8422_2325u64, |h, v| {
        v.to_bits().to_le_bytes().iter().fold(h, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
    })
}

/// The run's processes.
pub struct Ranks {
    pub rank: usize,
    pub size: usize,
    /// This process's index on its node (which adapter it takes).
    pub local_rank: usize,
    #[cfg(feature = "mpi")]
    mpi: Option<Mpi>,
}

#[cfg(feature = "mpi")]
struct Mpi {
    world: mpi::topology::SimpleCommunicator,
    // Held for the life of the run: MPI is finalised when it drops.
    _universe: mpi::environment::Universe,
}

impl Ranks {
    /// One process.
    pub fn single() -> Self {
        Self {
            rank: 0,
            size: 1,
            local_rank: 0,
            #[cfg(feature = "mpi")]
            mpi: None,
        }
    }

    /// The processes of this launch: MPI's world where the binary has MPI and a launcher started
    /// it, else one process; a launch whose variables disagree with MPI's world is an error.
    pub fn from_launch() -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok();
        #[cfg(feature = "mpi")]
        {
            if launched_size(var).is_some() {
                use mpi::traits::Communicator;
                let universe =
                    mpi::initialize().ok_or_else(|| Error::Invalid("MPI was initialised twice".into()))?;
                let world = universe.world();
                let (rank, size) = (world.rank() as usize, world.size() as usize);
                check_launch(size, var, true)?;
                return Ok(Self {
                    rank,
                    size,
                    local_rank: local_rank(var),
                    mpi: Some(Mpi { world, _universe: universe }),
                });
            }
        }
        check_launch(1, var, cfg!(feature = "mpi"))?;
        Ok(Self::single())
    }

    /// Whether this process writes the run's files.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// Every rank's `mine` (all of one length), joined in rank order: MPI_Allgather of bytes.
    pub fn all_gather(&self, mine: &[f32]) -> Result<Vec<f32>> {
        if self.size == 1 {
            return Ok(mine.to_vec());
        }
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            use mpi::traits::CommunicatorCollectives;
            let bytes: &[u8] = bytemuck::cast_slice(mine);
            let mut all = vec![0u8; bytes.len() * self.size];
            m.world.all_gather_into(bytes, &mut all[..]);
            return Ok(bytemuck::pod_collect_to_vec(&all));
        }
        Err(Error::Invalid("ranks without MPI".into()))
    }

    /// A step's shares from every rank, joined in rank order (each rank's gradients, then its
    /// losses, moved in one all-gather).
    pub fn exchange(&self, mine: SharePart) -> Result<SharePart> {
        if self.size == 1 {
            return Ok(mine);
        }
        let (g, l) = (mine.gradients.len(), mine.losses.len());
        let mut row = mine.gradients;
        row.extend(mine.losses);
        let all = self.all_gather(&row)?;
        let mut out = SharePart { gradients: Vec::with_capacity(g * self.size), losses: vec![] };
        for r in all.chunks(g + l) {
            out.gradients.extend_from_slice(&r[..g]);
            out.losses.extend_from_slice(&r[g..]);
        }
        Ok(out)
    }

    /// Checks that every rank's weights hash to rank 0's (at each checkpoint).
    pub fn check_same_weights(&self, hash: u64) -> Result<()> {
        if self.size == 1 {
            return Ok(());
        }
        let words = [hash as u32, (hash >> 32) as u32];
        let all = self.all_gather(&words.map(f32::from_bits))?;
        let hashes: Vec<u64> =
            all.chunks(2).map(|w| w[0].to_bits() as u64 | ((w[1].to_bits() as u64) << 32)).collect();
        match hashes.iter().position(|&h| h != hashes[0]) {
            Some(r) => Err(Error::Invalid(format!(
                "rank {r}'s weights differ from rank 0's (checksums {:016x} and {:016x}): the ranks left the \
                 same bits; the run stops before writing",
                hashes[r], hashes[0]
            ))),
            None => Ok(()),
        }
    }

    /// Ends the whole job (every rank) after an error on this one: MPI_Abort, so no rank waits
    /// in a collective for one that is gone.
    pub fn abort(&self, code: i32) -> ! {
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            use mpi::traits::Communicator;
            m.world.abort(code);
        }
        std::process::exit(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|p| p.0 == k).map(|p| p.1.to_string())
    }

    #[test]
    fn a_launch_is_checked_against_the_world_mpi_sees() {
        assert!(check_launch(1, env(&[]), false).is_ok());
        assert!(check_launch(2, env(&[("OMPI_COMM_WORLD_SIZE", "2")]), true).is_ok());
        let e = check_launch(1, env(&[("SLURM_STEP_NUM_TASKS", "4")]), true).unwrap_err().to_string();
        assert!(e.contains("SLURM_STEP_NUM_TASKS=4") && e.contains("world of 1"), "{e}");
        let e = check_launch(1, env(&[("WORLD_SIZE", "8")]), false).unwrap_err().to_string();
        assert!(e.contains("--features mpi"), "{e}");
        assert!(check_launch(1, env(&[("PMI_SIZE", "1")]), false).is_ok(), "one process is one process");
        assert_eq!(local_rank(env(&[("SLURM_LOCALID", "3")])), 3);
        assert_eq!(local_rank(env(&[])), 0);
    }

    #[test]
    fn ranks_own_contiguous_shares() {
        assert_eq!(own_shares(8, 1, 4).unwrap(), 2..4);
        assert_eq!(own_shares(8, 0, 1).unwrap(), 0..8);
        assert!(own_shares(8, 0, 3).unwrap_err().to_string().contains("must divide"));
    }

    #[test]
    fn checksums_see_one_bit() {
        let a = checksum([1.0f32, 2.0, 3.0]);
        assert_eq!(a, checksum([1.0f32, 2.0, 3.0]));
        assert_ne!(a, checksum([1.0f32, 2.0, f32::from_bits(3.0f32.to_bits() ^ 1)]));
    }
}
