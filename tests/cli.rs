//! The command line end to end: what users type, and the one-line errors they get.

use std::process::Command;

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wgpu-diffusion")).args(args).output().expect("run the binary");
    let stderr: String = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR")) // the Vulkan loader's harmless noise
        .map(|l| format!("{l}\n"))
        .collect();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

fn golden(name: &str) -> String {
    format!("{}/tests/golden/unet/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[track_caller]
fn assert_one_line_error(ok: bool, stderr: &str, words: &[&str]) {
    assert!(!ok, "must fail");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    for w in words {
        assert!(stderr.contains(w), "should mention '{w}': {stderr}");
    }
}

#[test]
fn info_lists_adapters() {
    let (ok, out, err) = cli(&["info"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("adapter 0:") && out.contains("max storage binding") && out.contains("chosen:"),
        "{out}"
    );
}

#[test]
fn info_describes_a_model() {
    // diffusers counts 65,858 parameters for this model (tools/make_unet_goldens.py prints it).
    let (ok, out, err) = cli(&["info", "--model", &golden("all-attention"), "--batch", "4"]);
    assert!(ok, "{err}");
    assert!(out.contains("65,858 parameters"), "{out}");
    assert!(out.contains("batch 4: planned activation memory"), "{out}");
}

#[test]
fn bad_model_folder_is_one_line() {
    let (ok, _, err) = cli(&["info", "--model", "/nonexistent/model"]);
    assert_one_line_error(ok, &err, &["/nonexistent/model", "does not exist"]);
}

#[test]
fn bad_backend_and_adapter_are_one_line() {
    let (ok, _, err) = cli(&["info", "--backend", "foo"]);
    assert_one_line_error(ok, &err, &["unknown backend 'foo'"]);
    let (ok, _, err) = cli(&["info", "--adapter", "99"]);
    assert_one_line_error(ok, &err, &["--adapter 99"]);
}

#[cfg(target_os = "linux")]
#[test]
fn no_adapter_says_how_to_get_one() {
    // Linux has no DX12: the same path as a machine without any driver.
    let (ok, _, err) = cli(&["info", "--backend", "dx12"]);
    assert_one_line_error(ok, &err, &["no GPU adapter", "mesa-vulkan-drivers"]);
}
