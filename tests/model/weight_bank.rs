//! The weight bank's embedding tables split into row ranges (a vocabulary larger than one storage
//! binding: CLIP's 49,408 x 768 table is 152 MB, lavapipe binds 128 MiB): every row lands in its
//! part, and a second graph of the model (after the host copy is released) reuses the parts.

use std::collections::HashMap;

use wgpu_diffusion::model::tensors::HostTensor;
use wgpu_diffusion::model::weights::WeightBank;

use crate::*;

#[test]
fn table_rows_split_a_table_and_a_second_build_reuses_the_parts() {
    let (rows, dim) = (10, 4);
    let data: Vec<f32> = (0..rows * dim).map(|v| v as f32).collect();
    let host =
        HashMap::from([("table".to_string(), HostTensor { shape: vec![rows, dim], data: data.clone() })]);
    let mut bank = WeightBank::new(host, "a test table");
    // 3 rows of 4 floats a part: 0..3, 3..6, 6..9, 9..10.
    let parts = bank.table_rows(ctx(), "table", rows, dim, 48).unwrap();
    let got: Vec<(usize, usize)> = parts.iter().map(|p| (p.start, p.rows)).collect();
    assert_eq!(got, vec![(0, 3), (3, 3), (6, 3), (9, 1)]);
    for p in &parts {
        let values = ctx().read_buffer(&bank.buffers[p.weight], p.rows * dim).unwrap();
        assert_eq!(values, data[p.start * dim..(p.start + p.rows) * dim], "rows {}..", p.start);
    }
    bank.release_host();
    let again = bank.table_rows(ctx(), "table", rows, dim, 48).unwrap();
    let ids =
        |v: &[wgpu_diffusion::model::weights::TableRows]| v.iter().map(|p| p.weight).collect::<Vec<_>>();
    assert_eq!(ids(&again), ids(&parts));
}
