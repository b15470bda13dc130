//! GPU time per dispatch from timestamp queries: each timed dispatch runs in its own compute pass
//! with begin/end timestamps (TIMESTAMP_QUERY is enough). Without the feature, callers fall back to
//! wall time with a device sync (and say so).

use super::{Context, Dispatch};
use crate::{Error, Result};

/// Dispatches timed per submission (two timestamps each, within the 4096-query limit).
const MAX_TIMED: usize = 2048;

pub struct Profiler {
    query_set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    /// Nanoseconds per timestamp tick.
    period_ns: f64,
}

impl Profiler {
    /// None when the device has no timestamp queries.
    pub fn new(ctx: &Context) -> Option<Self> {
        if !ctx.has(wgpu::Features::TIMESTAMP_QUERY) {
            return None;
        }
        let query_set = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profiler"),
            ty: wgpu::QueryType::Timestamp,
            count: (2 * MAX_TIMED) as u32,
        });
        let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profiler resolve"),
            size: (2 * MAX_TIMED * 8) as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Some(Self { query_set, resolve, period_ns: ctx.queue.get_timestamp_period() as f64 })
    }

    /// Runs the dispatches in order and returns each one's GPU time in milliseconds.
    pub fn time(&self, ctx: &Context, dispatches: &[Dispatch]) -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(dispatches.len());
        for chunk in dispatches.chunks(MAX_TIMED) {
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            for (i, d) in chunk.iter().enumerate() {
                let stamp = |begin: Option<u32>, end: Option<u32>| wgpu::ComputePassDescriptor {
                    label: Some(d.label),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &self.query_set,
                        beginning_of_pass_write_index: begin,
                        end_of_pass_write_index: end,
                    }),
                };
                let (begin, end) = (Some(2 * i as u32), Some(2 * i as u32 + 1));
                if d.copies.is_empty() {
                    d.record(&mut enc.begin_compute_pass(&stamp(begin, end)));
                    continue;
                }
                // Copies count as the dispatch's time: empty passes stamp around them.
                enc.begin_compute_pass(&stamp(begin, None));
                d.record_copies(&mut enc);
                d.record(&mut enc.begin_compute_pass(&stamp(None, end)));
            }
            let n = 2 * chunk.len() as u32;
            enc.resolve_query_set(&self.query_set, 0..n, &self.resolve, 0);
            ctx.queue.submit([enc.finish()]);
            let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&ctx.read_raw(&self.resolve, n as u64 * 8)?);
            for pair in ticks.chunks_exact(2) {
                let dt = pair[1]
                    .checked_sub(pair[0])
                    .ok_or_else(|| Error::Gpu("timestamps went backwards".into()))?;
                out.push(dt as f64 * self.period_ns / 1e6);
            }
        }
        Ok(out)
    }
}

/// The median of repeated timings (the upper middle one for an even count); sorts `v`.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
