//! `train` over MPI ranks (cargo feature `mpi`; needs Open MPI's `mpirun`): ranks that share a
//! batch's gradient shares write the bits one process writes, a run of ranks resumes on fewer,
//! and ranks that cannot share a run stop at once, every one, with one line each.
//! Run: cargo test --release --features mpi --test mpi
#![cfg(feature = "mpi")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_wgpu-diffusion");

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-scratch/mpi").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A gzipped IDX file of `n` 10x10 images that differ from each other.
fn idx_gz(path: &Path, n: usize) {
    let mut raw = vec![0, 0, 8, 3];
    for d in [n as u32, 10, 10] {
        raw.extend(d.to_be_bytes());
    }
    for i in 0..n {
        for y in 0..10 {
            for x in 0..10 {
                let inside = (y / 3 + i) % 3 == 0 && (x + i) % 4 < 2;
                raw.push(if inside { 230 } else { (10 * i % 60) as u8 });
            }
        }
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).unwrap();
    std::fs::write(path, gz.finish().unwrap()).unwrap();
}

/// The tiny model's run of 6 steps, batch 8 in 4 gradient shares, checkpointed every 3.
fn recipe(data: &Path, out: &Path) -> Vec<String> {
    recipe_of(data, out, 6)
}

fn recipe_of(data: &Path, out: &Path, steps: u64) -> Vec<String> {
    let config = format!("{}/tests/data/tiny_unet_config.json", env!("CARGO_MANIFEST_DIR"));
    let mut v: Vec<String> = ["train", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()]
        .map(String::from)
        .to_vec();
    let steps = steps.to_string();
    for a in ["--config", &config, "--steps", &steps, "--batch", "8", "--grad-shards", "4"] {
        v.push(a.to_string());
    }
    v.extend(["--save-every", "3", "--sample-every", "0"].map(String::from));
    v
}

/// Runs `cmd`, killing it after `limit` (a hang is a failure, not a stuck suite).
fn run(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start the command");
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("{cmd:?} ran past {limit:?}: a rank waits for another");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// `args` on `ranks` MPI ranks of this machine.
fn mpirun(ranks: usize, args: &[String]) -> Output {
    run(mpirun_command(ranks, args), Duration::from_secs(300))
}

fn mpirun_command(ranks: usize, args: &[String]) -> Command {
    let mut cmd = Command::new("mpirun");
    // Open MPI refuses root (CI's containers) and more ranks than cores unless told.
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    cmd.args(["--oversubscribe", "-n", &ranks.to_string(), BIN]).args(args);
    cmd
}

fn one_process(args: &[String]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    run(cmd, Duration::from_secs(300))
}

fn ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// Everything a run wrote, which must not depend on how many processes ran it: every file's
/// bytes, but the log's, whose times differ: of it, every step's loss, learning rate and gradient
/// norm.
fn written(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let bytes = std::fs::read(&p).unwrap();
            if name != "train_log.jsonl" {
                return (name, bytes);
            }
            let steps: String = String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    format!("{} {} {} {}\n", v["step"], v["loss"], v["lr"], v["grad_norm"])
                })
                .collect();
            (name, steps.into_bytes())
        })
        .collect();
    files.sort();
    files
}

fn same(got: &[(String, Vec<u8>)], want: &[(String, Vec<u8>)], what: &str) {
    let names = |f: &[(String, Vec<u8>)]| f.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(got), names(want), "{what}: the files written");
    for (g, w) in got.iter().zip(want) {
        assert!(g.1 == w.1, "{what}: {} differs from one process's", g.0);
    }
}

#[test]
fn ranks_write_the_bits_one_process_writes_and_resume_on_fewer() {
    let dir = scratch("bits");
    let data = dir.join("data.idx.gz");
    idx_gz(&data, 40);
    let one = dir.join("one");
    ok(&one_process(&recipe(&data, &one)), "one process");
    let want = written(&one);
    let log = &want.iter().find(|f| f.0 == "train_log.jsonl").unwrap().1;
    assert_eq!(log.iter().filter(|&&b| b == b'\n').count(), 6, "six steps logged");
    assert!(want.iter().any(|f| f.0 == "training_state.safetensors"), "a checkpoint");
    for ranks in [2, 4] {
        let out = dir.join(format!("ranks-{ranks}"));
        let run = mpirun(ranks, &recipe(&data, &out));
        ok(&run, &format!("{ranks} ranks"));
        same(&written(&out), &want, &format!("{ranks} ranks"));
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(err.matches("training ").count(), 1, "rank 0 alone reports the run:\n{err}");
    }
    // Two ranks stopped at a checkpoint (a job's time limit, a lost node), resumed by one process.
    let resumed = dir.join("resumed");
    let mut first = recipe(&data, &resumed);
    first.extend(["--stop-at", "3"].map(String::from));
    ok(&mpirun(2, &first), "2 ranks to step 3");
    let rest = ["train", "--data", data.to_str().unwrap(), "--out", resumed.to_str().unwrap(), "--resume"]
        .map(String::from);
    ok(&one_process(&rest), "the resumed run");
    same(&written(&resumed), &want, "2 ranks resumed by one process");
}

#[test]
fn ranks_that_cannot_share_the_run_all_stop_with_one_line() {
    let dir = scratch("refused");
    let data = dir.join("data.idx.gz");
    idx_gz(&data, 40);
    let out = dir.join("run");
    let run = mpirun(3, &recipe(&data, &out));
    assert!(!run.status.success(), "3 ranks cannot share 4 gradient shares");
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("3 ranks cannot share the run's 4 gradient shares"), "{err}");
    assert!(err.lines().any(|l| l.starts_with("error: rank ") && l.contains(" of 3: ")), "{err}");
    assert!(!out.join("diffusion_pytorch_model.safetensors").exists(), "nothing is written");
}

/// The process `mpirun` (pid `launcher`) started as `rank`, by its children's environments.
fn rank_pid(launcher: u32, rank: usize) -> Option<u32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).find(
        |pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The parent's pid is the second field after the command's closing parenthesis.
            let parent =
                stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok());
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            parent == Some(launcher) && env.split(|&b| b == 0).any(|v| v == want.as_bytes())
        },
    )
}

#[test]
fn a_killed_rank_ends_the_job_and_the_run_resumes_from_its_checkpoint() {
    let dir = scratch("killed");
    let data = dir.join("data.idx.gz");
    idx_gz(&data, 40);
    let one = dir.join("one");
    ok(&one_process(&recipe_of(&data, &one, 12)), "one process");
    let out = dir.join("run");
    let mut job = mpirun_command(2, &recipe_of(&data, &out, 12))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Past the first checkpoint (step 3), rank 1 is killed.
    let t0 = Instant::now();
    let steps = || std::fs::read_to_string(out.join("train_log.jsonl")).map_or(0, |l| l.lines().count());
    while steps() < 5 {
        assert!(
            t0.elapsed() < Duration::from_secs(120) && job.try_wait().unwrap().is_none(),
            "the job did not reach step 5"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let victim = rank_pid(job.id(), 1).expect("rank 1's process");
    Command::new("kill").args(["-9", &victim.to_string()]).status().unwrap();
    let killed = Instant::now();
    while job.try_wait().unwrap().is_none() {
        if killed.elapsed() > Duration::from_secs(30) {
            let _ = job.kill();
            panic!("rank 0 still runs 30 s after rank 1 was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let end = job.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&end.stderr);
    assert!(!end.status.success(), "the job fails");
    assert!(err.contains("rank 1"), "the error names the rank:\n{err}");
    // The job may have died mid-write: the checkpoint it left is whole, and the run resumes
    // from it with two ranks again to the bits of one process.
    let rest = ["train", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--resume"]
        .map(String::from);
    ok(&mpirun(2, &rest), "the resumed run");
    same(&written(&out), &written(&one), "killed and resumed");
}
