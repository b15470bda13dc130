//! Reverse-mode autodiff over a static graph: from a forward graph ending in a scalar loss, the
//! backward ops are appended to the same graph, so that one plan and one lowering cover forward and
//! backward (the planner then keeps each forward activation alive until its last backward use).
//!
//! Gradients flow only where they are needed: a tensor needs one when it depends on a trainable
//! param and the loss depends on it (the timestep embedding's input and its frequencies need none).
//! Where a tensor feeds several ops (a resnet's input, a skip, the time embedding) its gradients
//! are summed by `Add` ops, in a fixed order. Each op's own backward lives beside it in `ops/`.

use std::collections::HashMap;

use super::ops::Backward;
use super::{Graph, Op, TensorId};
use crate::{Error, Result};

/// What `backward` added: the gradient tensor of every trainable param (graph outputs, so their
/// buffers live for the whole run).
#[derive(Clone, Debug)]
pub struct Gradients {
    /// (param tensor, its gradient), in the order of `Graph::params`.
    pub params: Vec<(TensorId, TensorId)>,
}

impl Gradients {
    /// The gradient of param `p`, if it has one.
    pub fn of(&self, p: TensorId) -> Option<TensorId> {
        self.params.iter().find(|&&(q, _)| q == p).map(|&(_, g)| g)
    }
}

/// Appends to `g` the backward of the scalar `loss`, the output of an `MseLoss` node.
pub fn backward(g: &mut Graph, loss: TensorId) -> Result<Gradients> {
    let root = g
        .nodes
        .iter()
        .position(|n| n.outputs.contains(&loss))
        .ok_or_else(|| Error::Invalid("backward: the loss is not computed by the graph".into()))?;
    let Op::MseLoss(loss_op) = g.nodes[root].op.clone() else {
        return Err(Error::Invalid(format!(
            "backward: the loss must be an MSE loss, not a {}",
            g.nodes[root].op.kind()
        )));
    };
    let needs = needs_gradient(g, loss);
    // The gradients each tensor has received so far, in the order they arrived.
    let mut received: HashMap<TensorId, Vec<TensorId>> = HashMap::new();
    let layer = g.nodes[root].layer.clone();
    let seed = g.mse_grad(&format!("{layer} (gradient)"), &loss_op);
    received.entry(loss_op.pred).or_default().push(seed);

    for i in (0..root).rev() {
        let node = g.nodes[i].clone();
        let out = node.output();
        if node.outputs.len() != 1 || !needs[out] {
            continue;
        }
        let Some(dy) = sum(g, &node.layer, received.remove(&out))? else { continue };
        let at = Backward { layer: &node.layer, dy, needs: &needs };
        for (input, grad) in node.op.get().backward(g, &at)? {
            received.entry(input).or_default().push(grad);
        }
    }

    let mut params = vec![];
    for (p, _) in g.params.clone() {
        if !needs[p] {
            continue;
        }
        let layer =
            g.nodes.iter().find(|n| n.op.inputs().contains(&p)).map_or(String::new(), |n| n.layer.clone());
        if let Some(grad) = sum(g, &format!("{layer} (parameter gradient)"), received.remove(&p))? {
            g.mark_output(grad);
            params.push((p, grad));
        }
    }
    Ok(Gradients { params })
}

/// Which tensors need a gradient: trainable params, what depends on one, and only where the loss
/// depends on it in turn.
fn needs_gradient(g: &Graph, loss: TensorId) -> Vec<bool> {
    let n = g.shapes.len();
    let mut depends_on_param = vec![false; n];
    for &(p, _) in &g.params {
        depends_on_param[p] = !g.frozen.contains(&p);
    }
    for node in &g.nodes {
        if node.op.inputs().iter().any(|&t| depends_on_param[t]) {
            for &o in &node.outputs {
                depends_on_param[o] = true;
            }
        }
    }
    let mut loss_depends = vec![false; n];
    loss_depends[loss] = true;
    for node in g.nodes.iter().rev() {
        if node.outputs.iter().any(|&o| loss_depends[o]) {
            for t in node.op.inputs() {
                loss_depends[t] = true;
            }
        }
    }
    (0..n).map(|t| depends_on_param[t] && loss_depends[t]).collect()
}

/// The sum of `grads` (an `Add` chain in arrival order); None where no gradient arrived.
fn sum(g: &mut Graph, layer: &str, grads: Option<Vec<TensorId>>) -> Result<Option<TensorId>> {
    let mut grads = grads.unwrap_or_default().into_iter();
    let Some(mut total) = grads.next() else { return Ok(None) };
    for next in grads {
        total = g.add(&format!("{layer} (gradient sum)"), total, next)?;
    }
    Ok(Some(total))
}
