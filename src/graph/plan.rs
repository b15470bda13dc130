//! Buffer planning: every intermediate tensor gets a slot (a device buffer) for its lifetime, and
//! slots are reused greedily by size once their tensor is dead. Graph inputs and outputs keep their
//! own slots. The planned bytes are known before anything is allocated.

use super::{Graph, TensorId};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Slot of every tensor (by id); `Plan::PARAM` for params, which live in the model's buffers.
    pub slot_of: Vec<usize>,
    /// Size in bytes of every slot.
    pub slot_bytes: Vec<u64>,
    /// Sum of the slots: the activation memory this plan allocates.
    pub peak_bytes: u64,
    /// What one buffer per tensor would take.
    pub naive_bytes: u64,
}

impl Plan {
    /// The slot of a param tensor: none.
    pub const PARAM: usize = usize::MAX;

    pub fn new(g: &Graph) -> Plan {
        let n = g.shapes.len();
        // Last node index that reads each tensor; inputs and outputs live for the whole run.
        const FOREVER: usize = usize::MAX;
        let mut last_use = vec![0usize; n];
        for (i, node) in g.nodes.iter().enumerate() {
            for t in node.op.inputs().into_iter().chain(node.outputs.iter().copied()) {
                last_use[t] = last_use[t].max(i);
            }
        }
        for &t in g.inputs.iter().chain(&g.outputs) {
            last_use[t] = FOREVER;
        }

        let mut slot_of = vec![usize::MAX; n];
        let mut slot_bytes: Vec<u64> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        let new_slot = |bytes: u64, slot_bytes: &mut Vec<u64>| {
            slot_bytes.push(bytes);
            slot_bytes.len() - 1
        };
        for &t in &g.inputs {
            slot_of[t] = new_slot(g.bytes(t), &mut slot_bytes);
        }
        for (i, node) in g.nodes.iter().enumerate() {
            for &out in &node.outputs {
                let need = g.bytes(out);
                slot_of[out] = if g.outputs.contains(&out) {
                    new_slot(need, &mut slot_bytes)
                } else {
                    // The smallest free slot that fits; else grow the largest free one; else a new slot.
                    let fitting = free
                        .iter()
                        .enumerate()
                        .filter(|(_, &s)| slot_bytes[s] >= need)
                        .min_by_key(|(_, &s)| slot_bytes[s]);
                    let pick = fitting
                        .or_else(|| free.iter().enumerate().max_by_key(|(_, &s)| slot_bytes[s]))
                        .map(|(i, _)| i);
                    match pick {
                        Some(pos) => {
                            let s = free.swap_remove(pos);
                            slot_bytes[s] = slot_bytes[s].max(need);
                            s
                        }
                        None => new_slot(need, &mut slot_bytes),
                    }
                };
            }
            // Free what dies here only after every output is placed, so an op never writes a
            // buffer it reads, nor two of its outputs one buffer.
            let mut dying: Vec<TensorId> = node.op.inputs();
            dying.extend(&node.outputs);
            dying.sort_unstable();
            dying.dedup();
            for t in dying {
                if last_use[t] == i && slot_of[t] != Self::PARAM && !free.contains(&slot_of[t]) {
                    free.push(slot_of[t]);
                }
            }
        }
        let naive_bytes = g.activations().map(|t| g.bytes(t)).sum();
        Plan { peak_bytes: slot_bytes.iter().sum(), slot_of, slot_bytes, naive_bytes }
    }

    /// The largest slot (what the device's buffer and binding limits must allow).
    pub fn largest_slot(&self) -> u64 {
        self.slot_bytes.iter().copied().max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Graph, LinearWeight};

    fn chain(len: usize, width: usize) -> Graph {
        let mut g = Graph::new();
        let mut x = g.input(&[1, width]);
        let w = LinearWeight { weight: 0, bias: None, fout: width, fin: width };
        for i in 0..len {
            x = g.linear(&format!("l{i}"), x, w, false).unwrap();
        }
        g.mark_output(x);
        g
    }

    #[test]
    fn a_chain_needs_two_intermediate_slots() {
        let g = chain(10, 64);
        let p = Plan::new(&g);
        // input + output + two ping-pong intermediates
        assert_eq!(p.slot_bytes.len(), 4);
        assert_eq!(p.peak_bytes, 4 * 256);
        assert_eq!(p.naive_bytes, 11 * 256);
        // The weight, shared by the ten layers, is one param tensor with no slot.
        assert_eq!(g.params.len(), 1);
        assert_eq!(p.slot_of[g.params[0].0], Plan::PARAM);
        assert!(g.nodes.iter().all(|n| n.op.inputs().contains(&g.params[0].0)));
    }

    #[test]
    fn no_op_writes_a_slot_it_reads_and_live_tensors_never_share() {
        // A diamond with a long-lived skip, like a UNet's skip connections.
        let mut g = Graph::new();
        let x = g.input(&[1, 8, 4, 4]);
        let a = g.silu("a", x);
        let b = g.silu("b", a);
        let c = g.silu("c", b);
        let d = g.concat("d", c, a).unwrap();
        let e = g.silu("e", d);
        g.mark_output(e);
        let p = Plan::new(&g);
        // Live ranges: a [0, 3], b [1, 2], c [2, 3], d [3, 4], e output.
        let live = |t: usize| -> (usize, usize) {
            let def = g.nodes.iter().position(|n| n.outputs.contains(&t)).unwrap_or(0);
            let last = g.nodes.iter().rposition(|n| n.op.inputs().contains(&t)).unwrap_or(usize::MAX);
            (def, last)
        };
        for t in 0..g.shapes.len() {
            for u in t + 1..g.shapes.len() {
                let ((d1, l1), (d2, l2)) = (live(t), live(u));
                if d1 <= l2 && d2 <= l1 {
                    assert_ne!(
                        p.slot_of[t], p.slot_of[u],
                        "tensors {t} and {u} overlap in time but share a slot"
                    );
                }
            }
        }
        for node in &g.nodes {
            for t in node.op.inputs() {
                assert_ne!(p.slot_of[t], p.slot_of[node.output()], "{} writes what it reads", node.layer);
            }
            assert!(p.slot_bytes[p.slot_of[node.output()]] >= g.bytes(node.output()));
        }
        assert!(p.peak_bytes < p.naive_bytes);
    }
}
