//! `train` end to end on a tiny model (tests/data/tiny_unet_config.json, 8x8 grey): the folder it
//! writes loads in this engine and samples; a run stopped and resumed gives the same bits as one
//! that ran through; a run killed at any moment leaves a readable checkpoint; bad data is one line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wgpu-diffusion"))
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = bin().args(args).output().expect("run the binary");
    let stderr: String = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .map(|l| format!("{l}\n"))
        .collect();
    (out.status.success(), stderr)
}

/// `sample` on a model folder: a few steps into `png`.
fn sample(model: &Path, png: &Path, steps: &str, batch: &str) -> (bool, String) {
    cli(&[
        "sample",
        "--model",
        model.to_str().unwrap(),
        "--steps",
        steps,
        "--batch",
        batch,
        "--out",
        png.to_str().unwrap(),
    ])
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-scratch/train").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tiny_config() -> String {
    format!("{}/tests/data/tiny_unet_config.json", env!("CARGO_MANIFEST_DIR"))
}

/// A gzipped IDX file of `n` 10x10 images (a bright square at a place that depends on the image),
/// as MNIST ships: the trainer resizes them to the model's 8x8.
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

/// `train --data DATA --out OUT` and `extra`, as a process (the spawned form for the kill test).
fn train_args<'a>(data: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    args
}

fn recipe<'a>(data: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data,
        "--out",
        out,
        "--steps",
        "6",
        "--batch",
        "4",
        "--warmup",
        "2",
        "--lr",
        "1e-3",
        "--save-every",
        "3",
        "--steps-per-submission",
        "2",
        "--random-flip",
    ]
}

#[test]
fn a_stopped_and_resumed_run_is_bit_identical_to_one_that_ran_through() {
    let dir = scratch("resume");
    let data = dir.join("images-idx3-ubyte.gz");
    idx_gz(&data, 13);
    let (data, config) = (data.to_str().unwrap().to_string(), tiny_config());
    let (through, stopped) = (dir.join("through"), dir.join("stopped"));
    let mut args = recipe(&data, through.to_str().unwrap());
    args.extend(["--config", &config, "--sample-every", "0"]);
    let (ok, err) = cli(&args);
    assert!(ok, "{err}");
    let mut args = recipe(&data, stopped.to_str().unwrap());
    args.extend(["--config", &config, "--sample-every", "0", "--stop-at", "3"]);
    let (ok, err) = cli(&args);
    assert!(ok, "{err}");
    assert!(err.contains("at step 3 of 6"), "{err}");
    // Recipe flags with --resume are refused: the saved recipe is the run's.
    let (ok, err) =
        cli(&["train", "--data", &data, "--out", stopped.to_str().unwrap(), "--resume", "--lr", "1"]);
    assert!(!ok && err.contains("drop --lr"), "{err}");
    let (ok, err) = cli(&["train", "--data", &data, "--out", stopped.to_str().unwrap(), "--resume"]);
    assert!(ok, "{err}");
    for file in [
        "training_state.safetensors",
        "diffusion_pytorch_model.safetensors",
        "config.json",
        "scheduler_config.json",
    ] {
        let (a, b) = (std::fs::read(through.join(file)).unwrap(), std::fs::read(stopped.join(file)).unwrap());
        assert!(a == b, "{file} differs between the run that ran through and the resumed one");
    }
    // The same losses, step by step (the seconds differ).
    let losses = |d: &Path| -> Vec<(u64, f64)> {
        std::fs::read_to_string(d.join("train_log.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
            })
            .collect()
    };
    let log = losses(&through);
    assert_eq!(log.iter().map(|l| l.0).collect::<Vec<_>>(), (1..=6).collect::<Vec<_>>());
    assert_eq!(log, losses(&stopped));
    // Training again into a run's folder without --resume is refused.
    let mut args = recipe(&data, through.to_str().unwrap());
    args.extend(["--config", &config]);
    let (ok, err) = cli(&args);
    assert!(!ok && err.contains("--resume continues it"), "{err}");
}

#[test]
fn the_output_is_a_model_folder_that_samples() {
    let dir = scratch("sample");
    let data = dir.join("train-images-idx3-ubyte.gz");
    idx_gz(&data, 9);
    let out = dir.join("model");
    // A folder holding the IDX file, as Debian's dataset packages are.
    let mut args = recipe(dir.to_str().unwrap(), out.to_str().unwrap());
    let config = tiny_config();
    args.extend([
        "--config",
        &config,
        "--sample-every",
        "6",
        "--no-ema",
        "--prediction-type",
        "v_prediction",
    ]);
    // Another run's log to draw beside this one's.
    let other = dir.join("other.jsonl");
    let lines: String =
        (1..=6).map(|k| format!("{{\"step\": {k}, \"loss\": {}}}\n", 1.0 / k as f64)).collect();
    std::fs::write(&other, lines).unwrap();
    let other = other.to_str().unwrap().to_string();
    args.extend(["--compare-log", &other]);
    let (ok, err) = cli(&args);
    assert!(ok, "{err}");
    for f in [
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "scheduler_config.json",
        "README.md",
        "loss.png",
        "train_log.jsonl",
        "samples/step-000006.png",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // Both curves are drawn: ours red, the other run's blue.
    let curve = image::open(out.join("loss.png")).unwrap().to_rgb8();
    let has = |rgb: [u8; 3]| curve.pixels().any(|p| p.0 == rgb);
    assert!(has([200, 40, 40]) && has([40, 70, 200]), "loss.png lacks a curve");
    let sched = std::fs::read_to_string(out.join("scheduler_config.json")).unwrap();
    assert!(sched.contains("\"v_prediction\""), "{sched}");
    let png = dir.join("s.png");
    let (ok, err) = sample(&out, &png, "3", "2");
    assert!(ok, "{err}");
    assert!(png.is_file());
}

#[test]
fn init_fine_tunes_a_diffusers_folder() {
    // The folder diffusers loaded (tests/model/checkpoint.rs), fine-tuned for two steps.
    let dir = scratch("init");
    let data = dir.join("images-idx3-ubyte.gz");
    idx_gz(&data, 5);
    let init = format!("{}/tests/golden/checkpoint/model", env!("CARGO_MANIFEST_DIR"));
    let out = dir.join("model");
    let (ok, err) = cli(&train_args(
        &data,
        &out,
        &["--init", &init, "--steps", "2", "--batch", "2", "--sample-every", "0"],
    ));
    assert!(ok, "{err}");
    assert!(err.contains(&format!("training the weights of {init}")), "{err}");
    let before = std::fs::read(format!("{init}/diffusion_pytorch_model.safetensors")).unwrap();
    let after = std::fs::read(out.join("diffusion_pytorch_model.safetensors")).unwrap();
    assert_eq!(before.len(), after.len(), "the same tensors");
    assert!(before != after, "the weights moved");
    // --init with --config is refused by the parser.
    let (ok, _) = cli(&["train", "--data", "x", "--out", "y", "--init", &init, "--config", "c.json"]);
    assert!(!ok);
}

#[test]
fn a_killed_run_leaves_a_readable_checkpoint() {
    let dir = scratch("kill");
    let data = dir.join("images-idx3-ubyte.gz");
    idx_gz(&data, 8);
    let out = dir.join("model");
    let config = tiny_config();
    let every_step = ["--save-every", "1", "--steps-per-submission", "1"];
    let mut args = train_args(
        &data,
        &out,
        &["--config", &config, "--steps", "60", "--batch", "2", "--sample-every", "0"],
    );
    args.extend(every_step);
    let mut resume = train_args(&data, &out, &["--resume"]);
    resume.extend(every_step);
    let state = out.join("training_state.safetensors");
    let png = dir.join("s.png");
    // Killed at three moments after a checkpoint exists (a fresh run, then resumed ones), while
    // checkpoints are being written every step.
    for (round, wait_ms) in [137u64, 251, 389].into_iter().enumerate() {
        let mut cmd = bin();
        if round == 0 {
            cmd.args(&args)
        } else {
            cmd.args(&resume)
        };
        let mut child = cmd.stderr(std::process::Stdio::null()).spawn().unwrap();
        let t0 = std::time::Instant::now();
        while !state.is_file() && t0.elapsed().as_secs() < 120 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(wait_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        // Every file a checkpoint has is whole: the engine loads the model and samples it.
        let (ok, err) = sample(&out, &png, "2", "1");
        assert!(ok, "after kill {round}: {err}");
    }
    // And the state resumes to the end.
    let (ok, err) = cli(&train_args(&data, &out, &["--resume", "--stop-at", "60"]));
    assert!(ok, "{err}");
}

#[test]
fn bad_data_is_one_line_naming_the_file() {
    let dir = scratch("bad-data");
    let config = tiny_config();
    let out = dir.join("out");
    let run = |data: &Path| cli(&train_args(data, &out, &["--config", &config, "--steps", "1"]));
    let check = |(ok, err): (bool, String), words: &[&str]| {
        assert!(!ok, "must fail");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        for w in words {
            assert!(err.contains(w), "should mention '{w}': {err}");
        }
    };
    // A truncated IDX file.
    let idx = dir.join("cut-idx3-ubyte");
    std::fs::write(&idx, [0, 0, 8, 3, 0, 0, 0, 5, 0, 0, 0, 10, 0, 0, 0, 10, 1, 2, 3]).unwrap();
    check(run(&idx), &["cut-idx3-ubyte", "needs 500"]);
    // A broken gzip.
    let gz = dir.join("broken.gz");
    std::fs::write(&gz, [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
    check(run(&gz), &["broken.gz", "gzip"]);
    // A folder with a corrupt PNG among good ones.
    let folder = dir.join("pngs");
    std::fs::create_dir_all(folder.join("class")).unwrap();
    image::GrayImage::from_pixel(12, 9, image::Luma([200])).save(folder.join("a.png")).unwrap();
    std::fs::write(folder.join("class/b.png"), b"\x89PNG not really").unwrap();
    check(run(&folder), &["b.png", "cannot read"]);
    // An empty folder, a float .npy out of range, a .npy of the wrong shape.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    check(run(&empty), &["no PNG or JPEG", "dataset-fashion-mnist"]);
    let npy = dir.join("x.npy");
    wgpu_diffusion::io::npy::write(&npy, &[2, 1, 8, 8], &vec![3.0; 128]).unwrap();
    check(run(&npy), &["x.npy", "[-1, 1]"]);
    wgpu_diffusion::io::npy::write(&npy, &[2, 3, 8, 8], &vec![0.0; 384]).unwrap();
    check(run(&npy), &["x.npy", "[N, 1, 8, 8]"]);
    check(run(&dir.join("nothing")), &["nothing", "no such"]);
}

/// A gzipped IDX label file of `labels`, as MNIST ships them beside the images.
fn idx_labels_gz(path: &Path, labels: &[u8]) {
    let mut raw = vec![0, 0, 8, 1];
    raw.extend((labels.len() as u32).to_be_bytes());
    raw.extend_from_slice(labels);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).unwrap();
    std::fs::write(path, gz.finish().unwrap()).unwrap();
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_class_conditional_run_with_dropout_resumes_bit_identical_and_its_dataset_round_trips() {
    let dir = scratch("classes");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    idx_gz(&data.join("train-images-idx3-ubyte.gz"), 13);
    idx_labels_gz(&data.join("train-labels-idx1-ubyte.gz"), &[0, 1, 2, 0, 1, 2, 2, 1, 0, 0, 1, 2, 1]);
    let (data, config) = (data.to_str().unwrap().to_string(), tiny_config());
    let (through, stopped) = (dir.join("through"), dir.join("stopped"));
    let class_flags = ["--num-classes", "3", "--class-names", "ring,square,dot", "--class-dropout", "0.5"];
    let mut args = recipe(&data, through.to_str().unwrap());
    args.extend(["--config", &config, "--sample-every", "6"]);
    args.extend(class_flags);
    let (ok, err) = cli(&args);
    assert!(ok, "{err}");
    assert!(err.contains("3 classes (ring, square, dot), null class 3"), "{err}");
    let mut args = recipe(&data, stopped.to_str().unwrap());
    args.extend(["--config", &config, "--sample-every", "6", "--stop-at", "3"]);
    args.extend(class_flags);
    let (ok, err) = cli(&args);
    assert!(ok, "{err}");
    // The class flags belong to the saved run too.
    let (ok, err) = cli(&[
        "train",
        "--data",
        &data,
        "--out",
        stopped.to_str().unwrap(),
        "--resume",
        "--num-classes",
        "3",
    ]);
    assert!(!ok && err.contains("drop --num-classes"), "{err}");
    let (ok, err) = cli(&["train", "--data", &data, "--out", stopped.to_str().unwrap(), "--resume"]);
    assert!(ok, "{err}");
    for file in ["training_state.safetensors", "diffusion_pytorch_model.safetensors", "config.json"] {
        let (a, b) = (std::fs::read(through.join(file)).unwrap(), std::fs::read(stopped.join(file)).unwrap());
        assert!(a == b, "{file} differs between the run that ran through and the resumed one");
    }
    // The folder says what its classes are; the grid shows each.
    let cfg = read_json(&through.join("config.json"));
    assert_eq!(cfg["num_class_embeds"], 4);
    assert_eq!(cfg["null_class_id"], 3);
    assert_eq!(cfg["id2label"]["1"], "square");
    assert!(through.join("samples/step-000006.png").is_file());

    // A labelled dataset out of it, in three shards, read back by `train` with the same labels.
    let made = dir.join("made");
    for shard in ["0/3", "1/3", "2/3"] {
        let (ok, err) = cli(&[
            "sample",
            "--model",
            through.to_str().unwrap(),
            "--per-class",
            "2",
            "--out-dir",
            made.to_str().unwrap(),
            "--steps",
            "2",
            "--shard",
            shard,
        ]);
        assert!(ok, "{err}");
    }
    for (class, images) in
        [("ring", ["000000", "000001"]), ("square", ["000002", "000003"]), ("dot", ["000004", "000005"])]
    {
        for i in images {
            let png = made.join(class).join(format!("{i}.png"));
            let text = wgpu_diffusion::io::images::png_text(&png).unwrap();
            assert!(text.iter().any(|(k, v)| k == "class" && v == class), "{png:?}: {text:?}");
        }
    }
    let data = wgpu_diffusion::io::dataset::Dataset::load(&made, 1, 8).unwrap();
    let labels = data.labels.unwrap();
    // ImageFolder order: dot, ring, square.
    assert_eq!(labels.names.as_deref().unwrap(), ["dot", "ring", "square"]);
    assert_eq!(labels.ids, [0, 0, 1, 1, 2, 2]);
    // Fine-tuning the model on it maps the folders' names to the model's classes.
    let again = dir.join("again");
    let (ok, err) = cli(&train_args(
        &made,
        &again,
        &["--init", through.to_str().unwrap(), "--steps", "1", "--batch", "2", "--sample-every", "0"],
    ));
    assert!(ok, "{err}");
    assert!(err.contains("3 classes (ring, square, dot)"), "{err}");
}

#[test]
fn bad_labels_and_class_flags_are_one_line_before_any_work() {
    let dir = scratch("bad-labels");
    let config = tiny_config();
    let out = dir.join("out");
    let images = dir.join("x.npy");
    wgpu_diffusion::io::npy::write(&images, &[4, 1, 8, 8], &vec![0.5; 256]).unwrap();
    let labels = dir.join("y.npy");
    let run = |extra: &[&str]| {
        let mut a = train_args(&images, &out, &["--config", &config, "--steps", "1", "--batch", "2"]);
        a.extend_from_slice(extra);
        cli(&a)
    };
    // One error line (after the line that reports the data, where the data was read).
    let check = |(ok, err): (bool, String), words: &[&str]| {
        assert!(!ok, "must fail");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
        assert!(errors.len() == 1 && err.trim_end().lines().count() <= 2, "one line: {err}");
        for w in words {
            assert!(errors[0].contains(w), "should mention '{w}': {err}");
        }
    };
    let lab = labels.to_str().unwrap();
    wgpu_diffusion::io::npy::write(&labels, &[3], &[0.0, 1.0, 1.0]).unwrap();
    check(run(&["--num-classes", "2", "--labels", lab]), &["y.npy", "3 labels for the 4 images"]);
    wgpu_diffusion::io::npy::write(&labels, &[4], &[0.0, 1.0, 5.0, 1.0]).unwrap();
    check(run(&["--num-classes", "2", "--labels", lab]), &["y.npy", "label 5 (image 2)", "2"]);
    check(run(&["--num-classes", "2"]), &["x.npy", "no labels"]);
    check(run(&["--class-dropout", "0.2"]), &["--class-dropout", "--num-classes"]);
    check(run(&["--num-classes", "2", "--class-dropout", "1.5"]), &["--class-dropout 1.5"]);
    check(run(&["--num-classes", "0"]), &["--num-classes must be at least 1"]);
    check(run(&["--num-classes", "2", "--class-names", "a,,b"]), &["--class-names", "empty"]);
    // --num-classes against a config that has its own class table.
    let cond = dir.join("cond.json");
    let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    c["num_class_embeds"] = 5.into();
    std::fs::write(&cond, c.to_string()).unwrap();
    let (cond, images_s, out_s) = (cond.to_str().unwrap(), images.to_str().unwrap(), out.to_str().unwrap());
    check(
        cli(&["train", "--data", images_s, "--out", out_s, "--config", cond, "--num-classes", "7"]),
        &["--num-classes 7", "num_class_embeds 5"],
    );
    // Every flag is checked before the data is read: an unreadable folder is not what is reported.
    let broken = dir.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("a.png"), b"not a png").unwrap();
    let broken = broken.to_str().unwrap();
    for (flags, words) in [
        (&["--steps", "0"][..], &["--steps must be at least 1"][..]),
        (&["--lr", "-1"][..], &["--lr", "-1"][..]),
        (&["--class-dropout", "2"][..], &["--class-dropout 2"][..]),
    ] {
        let mut a = vec!["train", "--data", broken, "--out", out_s, "--config", &config];
        a.extend_from_slice(flags);
        let (ok, err) = cli(&a);
        assert_eq!(err.trim_end().lines().count(), 1, "one line, before the data: {err}");
        check((ok, err), words);
    }
}
