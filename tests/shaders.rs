//! Every file in shaders/ parses and validates with naga, without a device.

use wgpu_diffusion::shaders;

#[test]
fn every_shader_validates_with_naga() {
    let mut failures = Vec::new();
    for shader in shaders::ALL {
        if let Err(e) = shaders::validate(shader) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "invalid shaders:\n{}", failures.join("\n"));
}

#[test]
fn every_file_in_shaders_dir_is_compiled_in() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("shaders/ exists")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wgsl"))
        .collect();
    on_disk.sort();
    let mut compiled: Vec<String> = shaders::ALL.iter().map(|s| s.name.to_string()).collect();
    compiled.sort();
    assert_eq!(on_disk, compiled, "shaders/ and shaders::ALL must list the same files");
}

#[test]
fn every_shared_part_is_used() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders/common");
    for entry in std::fs::read_dir(&dir).expect("shaders/common exists") {
        let text = std::fs::read_to_string(entry.expect("dir entry").path()).expect("readable");
        assert!(
            shaders::ALL.iter().any(|s| s.source.contains(text.trim())),
            "an unused part of shaders/common"
        );
    }
}

#[test]
fn a_broken_shader_is_reported() {
    let broken =
        wgpu_diffusion::gpu::ShaderSource { name: "broken.wgsl", source: "fn f() -> u32 { return 1.5; }" };
    let err = shaders::validate(&broken).expect_err("must fail");
    assert!(err.contains("broken.wgsl"), "{err}");
}
