//! The command line end to end: what users type, and the one-line errors they get.

use std::process::Command;

#[path = "common/sd_pipeline.rs"]
mod sd_pipeline;

fn cli(args: &[&str]) -> (bool, String, String) {
    cli_env(args, &[])
}

/// Runs the binary with `env` set and the schedulers' shard variables of this process removed.
fn cli_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wgpu-diffusion"));
    for var in
        ["SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT", "JOB_COMPLETION_INDEX"]
    {
        cmd.env_remove(var);
    }
    let out = cmd.args(args).envs(env.iter().copied()).output().expect("run the binary");
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
fn info_describes_a_class_conditional_model() {
    let model = format!("{}/tests/golden/class/class-table", env!("CARGO_MANIFEST_DIR"));
    let (ok, out, err) = cli(&["info", "--model", &model]);
    assert!(ok, "{err}");
    assert!(
        out.contains("class table of 11 rows") && out.contains("7 Sneaker") && out.contains("null class 10"),
        "{out}"
    );
}

#[test]
fn bad_model_folder_is_one_line() {
    let (ok, _, err) = cli(&["info", "--model", "/nonexistent/model"]);
    assert_one_line_error(ok, &err, &["/nonexistent/model", "does not exist"]);
}

#[test]
fn a_missing_flag_is_one_line_that_names_it() {
    // clap's message runs over lines; the one line must still name the flag (a resumed run once
    // answered only "the following required arguments were not provided").
    let (ok, _, err) = cli(&["train", "--out", "/nonexistent/run", "--resume"]);
    assert_one_line_error(ok, &err, &["required arguments", "--data", "see --help"]);
    let (ok, _, err) = cli(&["sample", "--steps", "ten"]);
    assert_one_line_error(ok, &err, &["--steps", "ten"]);
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

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-scratch/cli").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn sample_writes_a_grid_an_npy_and_numbered_pngs() {
    let dir = scratch("sample");
    let (grid, npy) = (dir.join("grid.png"), dir.join("out.npy"));
    let model = golden("fashion-f16");
    let args = ["sample", "--model", &model, "--steps", "3", "--batch", "3", "--seed", "4"];
    let (ok, _, err) =
        cli(&[&args[..], &["--out", grid.to_str().unwrap(), "--save-npy", npy.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    let img = image::open(&grid).unwrap();
    assert_eq!((img.width(), img.height()), (2 * 28 + 2, 2 * 28 + 2), "3 images in a 2x2 grid");
    let (shape, values) = wgpu_diffusion::io::npy::read(&npy).unwrap();
    assert_eq!(shape, vec![3, 1, 28, 28]);
    assert!(values.iter().all(|v| v.is_finite()));

    // The same seed gives the same bytes; --out-dir writes one PNG per image.
    let again = dir.join("again.npy");
    let out_dir = dir.join("each");
    let (ok, _, err) =
        cli(&[&args[..], &["--out-dir", out_dir.to_str().unwrap(), "--save-npy", again.to_str().unwrap()]]
            .concat());
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(&npy).unwrap(), std::fs::read(&again).unwrap());
    for i in 0..3 {
        let one = image::open(out_dir.join(format!("{i:06}.png"))).unwrap();
        assert_eq!((one.width(), one.height()), (28, 28));
    }

    // --init-noise: x_T from a file gives the sampler's deterministic result for that x_T.
    let x_t = dir.join("x_t.npy");
    let z: Vec<f32> = (0..3 * 28 * 28).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
    wgpu_diffusion::io::npy::write(&x_t, &[3, 1, 28, 28], &z).unwrap();
    let from_file = dir.join("from_file.npy");
    let (ok, _, err) = cli(&[
        "sample",
        "--model",
        &model,
        "--scheduler",
        "ddim",
        "--steps",
        "3",
        "--init-noise",
        x_t.to_str().unwrap(),
        "--save-npy",
        from_file.to_str().unwrap(),
        "--out",
        grid.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(wgpu_diffusion::io::npy::read(&from_file).unwrap().0, vec![3, 1, 28, 28]);
}

#[test]
fn sample_refuses_bad_input_with_one_line() {
    let dir = scratch("refuse");
    let model = golden("fashion-f16");
    let base = ["sample", "--model", model.as_str()];
    let run = |extra: &[&str]| cli(&[&base[..], extra].concat());
    let (ok, _, err) = run(&["--steps", "0"]);
    assert_one_line_error(ok, &err, &["--steps 0"]);
    let (ok, _, err) = run(&["--steps", "1001"]);
    assert_one_line_error(ok, &err, &["--steps 1001", "1000"]);
    let (ok, _, err) = run(&["--scheduler", "lms"]);
    assert_one_line_error(ok, &err, &["unknown sampler 'lms'", "dpm++2m"]);
    let garbage = dir.join("garbage.npy");
    std::fs::write(&garbage, b"not numpy").unwrap();
    let (ok, _, err) = run(&["--init-noise", garbage.to_str().unwrap()]);
    assert_one_line_error(ok, &err, &["garbage.npy", "not a NumPy"]);
    let wrong = dir.join("wrong.npy");
    wgpu_diffusion::io::npy::write(&wrong, &[2, 3, 28, 28], &vec![0.0; 2 * 3 * 28 * 28]).unwrap();
    let (ok, _, err) = run(&["--init-noise", wrong.to_str().unwrap()]);
    assert_one_line_error(ok, &err, &["[2, 3, 28, 28]", "[2, 1, 28, 28]"]);
    let (ok, _, err) = run(&["--out", "/nonexistent/dir/x.png"]);
    assert_one_line_error(ok, &err, &["cannot write /nonexistent/dir/x.png"]);
}

#[test]
fn noise_draws_the_forward_process() {
    let dir = scratch("noise");
    let input = dir.join("in.png");
    image::GrayImage::from_fn(40, 40, |x, y| image::Luma([((x * 6 + y) % 256) as u8])).save(&input).unwrap();
    let out = dir.join("strip.png");
    let (ok, _, err) = cli(&[
        "noise",
        "--image",
        input.to_str().unwrap(),
        "--model",
        &golden("fashion-f16"),
        "--steps",
        "5",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let strip = image::open(&out).unwrap().to_luma8();
    assert_eq!((strip.width(), strip.height()), (5 * 28 + 4 * 2, 28));
    // Frame 0 (t = 0) is nearly the image; the last frame (t = 999) is nearly pure noise.
    let resized = image::imageops::resize(
        &image::open(&input).unwrap().to_luma8(),
        28,
        28,
        image::imageops::FilterType::Triangle,
    );
    let frame_diff = |k: u32| -> f64 {
        let mut sum = 0.0;
        for y in 0..28 {
            for x in 0..28 {
                sum +=
                    (strip.get_pixel(k * 30 + x, y).0[0] as f64 - resized.get_pixel(x, y).0[0] as f64).abs();
            }
        }
        sum / (28.0 * 28.0)
    };
    assert!(frame_diff(0) < 4.0, "t = 0 differs from the image by {}", frame_diff(0));
    assert!(frame_diff(4) > 30.0, "t = 999 is still the image ({})", frame_diff(4));
    let (ok, _, err) = cli(&[
        "noise",
        "--image",
        "/nonexistent.png",
        "--model",
        &golden("fashion-f16"),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_one_line_error(ok, &err, &["cannot read image /nonexistent.png"]);
}

/// Every file of a folder, by name.
fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut all: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    all.sort();
    all
}

#[test]
fn three_shards_give_one_runs_files_byte_for_byte() {
    let dir = scratch("shards");
    let model = golden("fashion-f16");
    let base = [
        "sample",
        "--model",
        &model,
        "--steps",
        "2",
        "--batch",
        "10",
        "--seed",
        "3",
        "--scheduler",
        "euler-a",
    ];
    let (one, shards) = (dir.join("one"), dir.join("shards"));
    let (ok, _, err) = cli_env(&[&base[..], &["--out-dir", one.to_str().unwrap()]].concat(), &[]);
    assert!(ok, "{err}");
    let mut npys = vec![];
    for i in 0..3 {
        let npy = dir.join(format!("shard{i}.npy"));
        let shard = format!("{i}/3");
        let args = [
            &base[..],
            &["--shard", &shard, "--out-dir", shards.to_str().unwrap(), "--save-npy", npy.to_str().unwrap()],
        ];
        let (ok, _, err) = cli_env(&args.concat(), &[]);
        assert!(ok, "{err}");
        npys.push(wgpu_diffusion::io::npy::read(&npy).unwrap());
    }
    let want = files(&one);
    assert_eq!(
        want.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
        (0..10).map(|i| format!("{i:06}.png")).collect::<Vec<_>>()
    );
    assert_eq!(files(&shards), want, "3 shards = one run, byte for byte");
    // --save-npy holds the shard's own images: 4, 4 and 2.
    assert_eq!(npys.iter().map(|(s, _)| s[0]).collect::<Vec<_>>(), vec![4, 4, 2]);

    // --shard auto: a Slurm job array numbered from 5, and a Kubernetes Indexed Job.
    let (auto_slurm, auto_k8s) = (dir.join("slurm"), dir.join("k8s"));
    for (env, out) in [
        (
            vec![
                ("SLURM_ARRAY_TASK_ID", "7"),
                ("SLURM_ARRAY_TASK_MIN", "5"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
            ],
            &auto_slurm,
        ),
        (vec![("JOB_COMPLETION_INDEX", "2")], &auto_k8s),
    ] {
        let mut args = [&base[..], &["--shard", "auto", "--out-dir", out.to_str().unwrap()]].concat();
        if env.len() == 1 {
            args.extend(["--shard-count", "3"]);
        }
        let (ok, _, err) = cli_env(&args, &env);
        assert!(ok, "{err}");
        assert_eq!(files(out), want[8..].to_vec(), "shard 2 of 3 from the environment");
    }
    let (ok, _, err) = cli_env(&[&base[..], &["--shard", "auto"]].concat(), &[]);
    assert_one_line_error(ok, &err, &["--shard auto", "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"]);
    let (ok, _, err) = cli_env(&[&base[..], &["--shard", "3/3"]].concat(), &[]);
    assert_one_line_error(ok, &err, &["--shard 3/3", "I/N"]);
}

#[test]
fn pngs_say_how_to_regenerate_them() {
    let dir = scratch("png-text");
    let model = golden("fashion-f16");
    let (grid, each) = (dir.join("grid.png"), dir.join("each"));
    let args = [
        "sample",
        "--model",
        &model,
        "--steps",
        "2",
        "--batch",
        "2",
        "--seed",
        "9",
        "--scheduler",
        "ddim",
        "--eta",
        "0.5",
    ];
    let (ok, _, err) = cli(&[&args[..], &["--out", grid.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&[&args[..], &["--out-dir", each.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    let text = wgpu_diffusion::io::images::png_text(&each.join("000001.png")).unwrap();
    let get = |k: &str| text.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap_or_default();
    assert!(get("model").ends_with("fashion-f16"), "{text:?}");
    assert_eq!(
        (get("sampler"), get("steps"), get("seed"), get("eta")),
        ("ddim".into(), "2".into(), "9".into(), "0.5".into())
    );
    assert_eq!(get("image index"), "1");
    assert!(
        get("parameters").contains("--scheduler ddim --steps 2 --batch 2 --seed 9 --eta 0.5"),
        "{text:?}"
    );
    let grid_text = wgpu_diffusion::io::images::png_text(&grid).unwrap();
    assert!(grid_text.iter().any(|(k, v)| k == "image index" && v.starts_with("0-1")), "{grid_text:?}");
    // Written through a temporary file and renamed: none is left behind.
    assert!(files(&each).iter().all(|(name, _)| !name.ends_with(".tmp")), "{:?}", files(&each).len());
}

#[test]
fn a_non_finite_image_is_an_error_and_check_passes() {
    let dir = scratch("non-finite");
    let model = golden("fashion-f16");
    let mut z = vec![0.5f32; 3 * 28 * 28];
    z[28 * 28 + 5] = f32::NAN; // image 1
    let x_t = dir.join("x_t.npy");
    wgpu_diffusion::io::npy::write(&x_t, &[3, 1, 28, 28], &z).unwrap();
    let grid = dir.join("grid.png");
    let args = [
        "sample",
        "--model",
        &model,
        "--steps",
        "2",
        "--init-noise",
        x_t.to_str().unwrap(),
        "--out",
        grid.to_str().unwrap(),
    ];
    let (ok, _, err) = cli(&args);
    // After the run's header line, one line of error.
    let last = err.trim_end().lines().last().unwrap_or_default().to_string();
    assert!(!ok && err.trim_end().lines().count() == 2, "{err}");
    assert_one_line_error(ok, &last, &["image 1", "NaN", "--check"]);
    assert!(!grid.exists(), "nothing written");
    // --check on a sound model: every op within tolerance, one line per op on stdout.
    let (ok, out, err) = cli(&["sample", "--model", &model, "--steps", "2", "--batch", "9", "--check"]);
    assert!(ok, "{err}");
    assert!(out.lines().all(|l| l.starts_with("ok ")) && out.contains("conv_out (conv2d)"), "{out}");
    assert!(err.contains("within 1e-3 of their CPU references"), "{err}");
}

fn fashion_input() -> String {
    format!("{}/docs/inputs/fashion-test-1-pullover.png", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn img2img_redraws_and_strength_zero_returns_the_input() {
    let dir = std::env::temp_dir().join(format!("wgpu-diffusion-img2img-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (out, same) = (dir.join("redrawn.png"), dir.join("same.png"));
    let input = fashion_input();
    let (ok, _, err) = cli(&[
        "img2img",
        "--image",
        &input,
        "--strength",
        "0.5",
        "--steps",
        "4",
        "--batch",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let text = wgpu_diffusion::io::images::png_text(&out).unwrap();
    let params = &text.iter().find(|(k, _)| k == "parameters").unwrap().1;
    assert!(params.contains("img2img --image") && params.contains("--strength 0.5"), "{params}");
    // Strength 0: the input, unchanged to the 8-bit value, for each image of the batch.
    let (ok, _, err) = cli(&[
        "img2img",
        "--image",
        &input,
        "--strength",
        "0",
        "--batch",
        "1",
        "--out",
        same.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("unchanged"), "{err}");
    let (a, b) = (image::open(&input).unwrap().to_luma8(), image::open(&same).unwrap().to_luma8());
    assert_eq!(a.as_raw(), b.as_raw());
    // A JPEG of another size and shape is resized and centre-cropped to the model's 28x28.
    let jpeg = dir.join("wide.jpg");
    image::imageops::resize(&a, 40, 30, image::imageops::FilterType::Triangle).save(&jpeg).unwrap();
    let (ok, _, err) = cli(&[
        "img2img",
        "--image",
        jpeg.to_str().unwrap(),
        "--strength",
        "0",
        "--out",
        same.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(image::open(&same).unwrap().to_luma8().dimensions(), (4 * 28 + 3 * 2, 4 * 28 + 3 * 2));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn img2img_bad_input_is_one_line() {
    let input = fashion_input();
    let (ok, _, err) = cli(&["img2img", "--image", &input, "--strength", "1.5"]);
    assert_one_line_error(ok, &err, &["--strength 1.5", "between 0 and 1"]);
    let (ok, _, err) = cli(&["img2img", "--image", "no-such.png"]);
    assert_one_line_error(ok, &err, &["no-such.png"]);
    let (ok, _, err) = cli(&["img2img", "--image", &input, "--check"]);
    assert_one_line_error(ok, &err, &["--check"]);
}

fn input(name: &str) -> String {
    format!("{}/docs/inputs/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn inpaint_keeps_the_kept_region_to_the_8_bit_value() {
    let dir = std::env::temp_dir().join(format!("wgpu-diffusion-inpaint-{}", std::process::id()));
    let npy = std::env::temp_dir().join(format!("wgpu-diffusion-inpaint-{}.npy", std::process::id()));
    let (image, mask) = (input("fashion-test-0-boot.png"), input("mask-centre.png"));
    let (ok, _, err) = cli(&[
        "inpaint",
        "--image",
        &image,
        "--mask",
        &mask,
        "--steps",
        "4",
        "--jump-length",
        "2",
        "--jump-n-sample",
        "2",
        "--batch",
        "2",
        "--out-dir",
        dir.to_str().unwrap(),
        "--save-npy",
        npy.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let (shape, values) = wgpu_diffusion::io::npy::read(&npy).unwrap();
    assert_eq!(shape, vec![2, 1, 28, 28]);
    assert!(values.iter().all(|v| v.is_finite()));
    let (src, keep) = (image::open(&image).unwrap().to_luma8(), image::open(&mask).unwrap().to_luma8());
    for k in 0..2 {
        let got = image::open(dir.join(format!("{k:06}.png"))).unwrap().to_luma8();
        let mut filled_differs = false;
        for (i, (g, s)) in got.pixels().zip(src.pixels()).enumerate() {
            if keep.as_raw()[i] >= 128 {
                assert_eq!(g.0, s.0, "result {k}: kept pixel {i}");
            } else {
                filled_differs |= g.0 != s.0;
            }
        }
        assert!(filled_differs, "result {k}: the hole was filled");
    }
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_file(npy).unwrap();
}

#[test]
fn inpaint_bad_input_is_one_line() {
    let dir = std::env::temp_dir().join(format!("wgpu-diffusion-inpaint-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let image = input("fashion-test-0-boot.png");
    let path = |n: &str| dir.join(n).to_str().unwrap().to_string();
    image::GrayImage::from_pixel(28, 28, image::Luma([255])).save(path("all-keep.png")).unwrap();
    image::GrayImage::from_pixel(28, 28, image::Luma([127])).save(path("all-fill.png")).unwrap();
    image::GrayImage::from_pixel(20, 28, image::Luma([0])).save(path("small.png")).unwrap();
    for (mask, words) in [
        (path("all-keep.png"), vec!["keeps every pixel"]),
        (path("all-fill.png"), vec!["fills every pixel"]),
        (path("small.png"), vec!["same size", "20x28"]),
        (path("missing.png"), vec!["missing.png"]),
    ] {
        let (ok, _, err) = cli(&["inpaint", "--image", &image, "--mask", &mask]);
        assert_one_line_error(ok, &err, &words);
    }
    let (ok, _, err) =
        cli(&["inpaint", "--image", &image, "--mask", &input("mask-centre.png"), "--jump-length", "0"]);
    assert_one_line_error(ok, &err, &["--jump-length"]);
    std::fs::remove_dir_all(dir).unwrap();
}

fn class_golden(name: &str) -> String {
    format!("{}/tests/golden/class/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn text_of(png: &std::path::Path) -> Vec<(String, String)> {
    wgpu_diffusion::io::images::png_text(png).unwrap()
}

fn get<'a>(text: &'a [(String, String)], key: &str) -> &'a str {
    text.iter().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str())
}

#[test]
fn class_conditional_sample_takes_a_class_by_name_and_records_it() {
    let dir = scratch("classes");
    let model = class_golden("class-table");
    let each = dir.join("each");
    let (ok, _, err) = cli(&[
        "sample",
        "--model",
        &model,
        "--class",
        "ankle BOOT",
        "--guidance-scale",
        "3",
        "--batch",
        "2",
        "--steps",
        "2",
        "--out-dir",
        each.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let text = text_of(&each.join("000001.png"));
    assert_eq!((get(&text, "class"), get(&text, "guidance scale")), ("Ankle boot", "3"), "{text:?}");
    assert_eq!(get(&text, "null class"), "10");
    assert!(get(&text, "parameters").contains("--class \"ankle BOOT\" --guidance-scale 3"), "{text:?}");
    // Without --class, image k is of class k mod 10 at the default guidance; a grid lists them.
    let grid = dir.join("grid.png");
    let (ok, _, err) =
        cli(&["sample", "--model", &model, "--batch", "12", "--steps", "2", "--out", grid.to_str().unwrap()]);
    assert!(ok, "{err}");
    let text = text_of(&grid);
    let classes: Vec<&str> = get(&text, "class").split(", ").collect();
    assert_eq!(
        (classes.len(), classes[0], classes[9], classes[10]),
        (12, "T-shirt/top", "Ankle boot", "T-shirt/top")
    );
    assert_eq!(get(&text, "guidance scale"), "2");
    // Scale 1: the conditional model alone, no null class.
    let one = dir.join("one.png");
    let (ok, _, err) = cli(&[
        "sample",
        "--model",
        &model,
        "--batch",
        "1",
        "--steps",
        "2",
        "--guidance-scale",
        "1",
        "--out",
        one.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!((get(&text_of(&one), "guidance scale"), get(&text_of(&one), "null class")), ("1", ""));
}

#[test]
fn guided_shards_give_one_runs_files_byte_for_byte() {
    let dir = scratch("guided-shards");
    let model = class_golden("class-table");
    let base = [
        "sample",
        "--model",
        &model,
        "--steps",
        "2",
        "--per-class",
        "1",
        "--seed",
        "5",
        "--scheduler",
        "euler-a",
    ];
    let (one, shards) = (dir.join("one"), dir.join("shards"));
    let (ok, _, err) = cli(&[&base[..], &["--out-dir", one.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    for i in 0..3 {
        let shard = format!("{i}/3");
        let (ok, _, err) =
            cli(&[&base[..], &["--shard", &shard, "--out-dir", shards.to_str().unwrap()]].concat());
        assert!(ok, "{err}");
    }
    // Ten class folders with one image each, the same bytes from the shards.
    let mut folders: Vec<String> = std::fs::read_dir(&one)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    assert_eq!(folders.len(), 10, "{folders:?}");
    assert!(folders.contains(&"T-shirt_top".to_string()), "'/' cannot be in a folder name: {folders:?}");
    for f in &folders {
        assert_eq!(files(&one.join(f)), files(&shards.join(f)), "{f}: 3 shards = one run");
    }
    assert_eq!(files(&one.join("Sneaker"))[0].0, "000007.png", "image k is of class k / per-class");
}

#[test]
fn class_flags_bad_input_is_one_line() {
    let model = class_golden("class-table");
    let run = |extra: &[&str]| cli(&[&["sample", "--model", &model][..], extra].concat());
    let (ok, _, err) = run(&["--class", "10"]);
    assert_one_line_error(ok, &err, &["--class 10", "0..=9", "Ankle boot"]);
    let (ok, _, err) = run(&["--class", "hat"]);
    assert_one_line_error(ok, &err, &["--class hat", "T-shirt/top", "Sneaker"]);
    let (ok, _, err) = run(&["--guidance-scale", "-2"]);
    assert_one_line_error(ok, &err, &["--guidance-scale -2"]);
    let (ok, _, err) = run(&["--guidance-scale", "inf"]);
    assert_one_line_error(ok, &err, &["--guidance-scale inf"]);
    let (ok, _, err) = run(&["--null-class", "11"]);
    assert_one_line_error(ok, &err, &["--null-class 11", "0..=10"]);
    let (ok, _, err) = run(&["--per-class", "0"]);
    assert_one_line_error(ok, &err, &["--per-class must be at least 1"]);
    let (ok, _, err) = cli(&["sample", "--class", "1"]);
    assert_one_line_error(ok, &err, &["--class", "not class-conditional"]);
    let (ok, _, err) = cli(&["sample", "--model", &golden("fashion-f16"), "--guidance-scale", "2"]);
    assert_one_line_error(ok, &err, &["--guidance-scale", "not class-conditional"]);
    // A "timestep" class embedding takes any integer, but names no classes to cycle through.
    let (ok, _, err) = cli(&["sample", "--model", &class_golden("class-timestep")]);
    assert_one_line_error(ok, &err, &["--class"]);
}

#[test]
fn img2img_and_inpaint_take_a_class_and_guidance() {
    let dir = scratch("class-edits");
    let model = class_golden("class-table");
    let out = dir.join("i2i.png");
    let (ok, _, err) = cli(&[
        "img2img",
        "--model",
        &model,
        "--image",
        &fashion_input(),
        "--strength",
        "0.5",
        "--steps",
        "4",
        "--batch",
        "2",
        "--class",
        "Pullover",
        "--guidance-scale",
        "2.5",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(get(&text_of(&out), "class"), "Pullover");
    let filled = dir.join("filled");
    let (ok, _, err) = cli(&[
        "inpaint",
        "--model",
        &model,
        "--image",
        &input("fashion-test-0-boot.png"),
        "--mask",
        &input("mask-centre.png"),
        "--steps",
        "4",
        "--jump-length",
        "2",
        "--jump-n-sample",
        "2",
        "--batch",
        "2",
        "--class",
        "7",
        "--out-dir",
        filled.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let text = text_of(&filled.join("000001.png"));
    assert_eq!((get(&text, "class"), get(&text, "guidance scale")), ("Sneaker, Sneaker", "2"), "{text:?}");
}

/// A copy of a golden latent pipeline folder to break.
fn latent_copy(name: &str, to: &str) -> std::path::PathBuf {
    let src = std::path::PathBuf::from(format!("{}/tests/golden/latent/{name}", env!("CARGO_MANIFEST_DIR")));
    let dst = scratch(to);
    for sub in ["", "unet", "vae", "vqvae", "scheduler"] {
        let (s, d) = (src.join(sub), dst.join(sub));
        if !s.is_dir() {
            continue;
        }
        std::fs::create_dir_all(&d).unwrap();
        for e in std::fs::read_dir(&s).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                std::fs::copy(&p, d.join(p.file_name().unwrap())).unwrap();
            }
        }
    }
    dst
}

fn edit_json(path: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

#[test]
fn latent_pipeline_folders_sample_and_bad_ones_are_one_line() {
    // Both autoencoders sample, with the latents kept and PNGs of the decoded size.
    for (name, size) in [("ldm-vq", 32), ("ldm-kl", 64)] {
        let dir = scratch(&format!("latent-{name}"));
        let model = format!("{}/tests/golden/latent/{name}", env!("CARGO_MANIFEST_DIR"));
        let (png, latents) = (dir.join("grid.png"), dir.join("latents.npy"));
        let (ok, _, err) = cli(&[
            "sample",
            "--model",
            &model,
            "--steps",
            "3",
            "--batch",
            "3",
            "--scheduler",
            "euler-a",
            "--out",
            png.to_str().unwrap(),
            "--save-latents",
            latents.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        assert_eq!(
            image::open(&png).unwrap().width() as usize,
            2 * size + 2,
            "{name}: 3 images in a 2x2 grid"
        );
        assert_eq!(wgpu_diffusion::io::npy::read(&latents).unwrap().0[2], 8);
    }
    let run = |dir: &std::path::Path| cli(&["sample", "--model", dir.to_str().unwrap(), "--steps", "2"]);
    // --no-latent-scaling (diffusers#6725) decodes as a folder whose scaling_factor is 1 does.
    let d = latent_copy("ldm-vq", "unit-scale");
    edit_json(&d.join("vqvae/config.json"), |v| v["scaling_factor"] = 1.0.into());
    let npy = |name: &str, dir: &std::path::Path, extra: &[&str]| {
        let out = scratch(&format!("npy-{name}")).join("x.npy");
        let png = out.with_extension("png");
        let mut args = vec!["sample", "--model", dir.to_str().unwrap(), "--steps", "2", "--batch", "2"];
        args.extend_from_slice(&["--save-npy", out.to_str().unwrap(), "--out", png.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let (ok, _, err) = cli(&args);
        assert!(ok, "{name}: {err}");
        wgpu_diffusion::io::npy::read(&out).unwrap().1
    };
    let vq = std::path::PathBuf::from(format!("{}/tests/golden/latent/ldm-vq", env!("CARGO_MANIFEST_DIR")));
    let (scaled, unscaled) = (npy("scaled", &vq, &[]), npy("unscaled", &vq, &["--no-latent-scaling"]));
    assert_eq!(unscaled, npy("unit-scale", &d, &[]), "--no-latent-scaling is a scaling factor of 1");
    assert_ne!(scaled, unscaled, "the golden folder's factor is not 1");
    let (ok, _, err) = cli(&["sample", "--no-latent-scaling", "--steps", "2"]);
    assert_one_line_error(ok, &err, &["--no-latent-scaling", "pixels"]);
    let d = latent_copy("ldm-kl", "extra-component");
    edit_json(&d.join("model_index.json"), |v| {
        v["text_encoder"] = serde_json::json!(["transformers", "CLIPTextModel"])
    });
    let (ok, _, err) = run(&d);
    assert_one_line_error(ok, &err, &["text_encoder", "CLIPTextModel"]);
    let d = latent_copy("ldm-kl", "missing-vae");
    std::fs::remove_dir_all(d.join("vae")).unwrap();
    let (ok, _, err) = run(&d);
    assert_one_line_error(ok, &err, &["'vae'", "missing"]);
    let d = latent_copy("ldm-kl", "latent-channels");
    edit_json(&d.join("vae/config.json"), |v| v["latent_channels"] = 3.into());
    let (ok, _, err) = run(&d);
    assert_one_line_error(ok, &err, &["latents of 3 channels", "takes 4"]);
    let d = latent_copy("ldm-kl", "sample-size");
    edit_json(&d.join("unet/config.json"), |v| v["sample_size"] = 16.into());
    let (ok, _, err) = run(&d);
    assert_one_line_error(ok, &err, &["sample_size 16", "128 pixels", "64 pixels"]);
    let d = latent_copy("ldm-kl", "text-unet");
    edit_json(&d.join("model_index.json"), |v| {
        v["unet"] = serde_json::json!(["diffusers", "UNet2DConditionModel"])
    });
    let (ok, _, err) = run(&d);
    assert_one_line_error(ok, &err, &["UNet2DConditionModel", "text_encoder"]);
    let d = latent_copy("ldm-kl", "truncated-vae");
    let w = d.join("vae/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, _, err) = run(&d);
    assert_one_line_error(ok, &err, &["vae", "not a valid safetensors file"]);
    let (ok, _, err) = cli(&[
        "inpaint",
        "--model",
        &format!("{}/tests/golden/latent/ldm-vq", env!("CARGO_MANIFEST_DIR")),
        "--image",
        &input("fashion-test-0-boot.png"),
        "--mask",
        &input("mask-centre.png"),
    ]);
    assert_one_line_error(ok, &err, &["RePaint", "pixel-space"]);
}

/// `txt2img` on an SD 1.5-shaped pipeline folder: from the golden's latents it writes diffusers'
/// decoded image (--save-npy), a PNG whose `parameters` text is A1111's, numbered PNGs; a prompt
/// past 77 tokens is one warning naming what was cut.
#[test]
fn txt2img_writes_diffusers_image_and_its_parameters() {
    use wgpu_diffusion::model::tensors::read_safetensors;
    let dir = sd_pipeline::assemble_as("sd1", "cli-txt2img");
    let g = read_safetensors(std::path::Path::new(&format!(
        "{}/tests/golden/sd_pipeline/sd1-txt2img.safetensors",
        env!("CARGO_MANIFEST_DIR")
    )))
    .unwrap();
    let out = scratch("txt2img");
    let latents = out.join("latents.npy");
    let one = 4 * 8 * 8;
    wgpu_diffusion::io::npy::write(&latents, &[1, 4, 8, 8], &g["guided.latents_in"].data[..one]).unwrap();
    let (png, npy) = (out.join("a.png"), out.join("a.npy"));
    let prompt = "a photo of an astronaut riding a horse on mars";
    let args = [
        "txt2img",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        prompt,
        "--negative-prompt",
        "blurry",
        "--steps",
        "5",
        "--init-noise",
        latents.to_str().unwrap(),
        "--save-npy",
        npy.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
    ];
    let (ok, _, err) = cli(&args);
    assert!(ok, "{err}");
    let (shape, got) = wgpu_diffusion::io::npy::read(&npy).unwrap();
    assert_eq!(shape, vec![1, 3, 64, 64]);
    let want = &g["guided.decoded"].data[..3 * 64 * 64];
    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 2e-3, "the decoded image differs from diffusers' by {worst}");
    let text = wgpu_diffusion::io::images::png_text(&png).unwrap();
    let parameters = text.iter().find(|t| t.0 == "parameters").map(|t| t.1.clone()).expect("parameters");
    assert_eq!(
        parameters,
        format!("{prompt}\nNegative prompt: blurry\nSteps: 5, Sampler: PLMS, CFG scale: 7.5, Seed: 0, Size: 64x64, Model: cli-txt2img")
    );
    // Numbered PNGs; a long prompt is cut with one warning that names the words dropped.
    let long = format!("{} tail words here", ["castle"; 80].join(" "));
    let pngs = out.join("pngs");
    let (ok, _, err) = cli(&[
        "txt2img",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        &long,
        "--steps",
        "2",
        "--batch",
        "2",
        "--out-dir",
        pngs.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(pngs.join("000000.png").is_file() && pngs.join("000001.png").is_file());
    let warning: Vec<&str> = err.lines().filter(|l| l.contains("truncated")).collect();
    assert_eq!(warning.len(), 1, "{err}");
    assert!(warning[0].ends_with("castle castle castle castle castle tail words here"), "{err}");
    // A prompt past Latin-1 goes in an iTXt chunk, whole.
    let fox = "a 狐 in the snow 🦊";
    let (ok, _, err) = cli(&[
        "txt2img",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        fox,
        "--steps",
        "2",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let text = wgpu_diffusion::io::images::png_text(&png).unwrap();
    assert!(
        text.iter().any(|t| t.0 == "parameters" && t.1.starts_with(&format!("{fox}\nSteps: 2,"))),
        "{text:?}"
    );
}

#[test]
fn bad_text_to_image_input_is_one_line() {
    let run = |dir: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["txt2img", "--model", dir.to_str().unwrap(), "--prompt", "a fox", "--steps", "2"];
        args.extend_from_slice(extra);
        cli(&args)
    };
    let dir = sd_pipeline::assemble_as("sd1", "cli-bad-size");
    let (ok, _, err) = run(&dir, &["--height", "60"]);
    assert_one_line_error(ok, &err, &["--height 60", "multiple of 8"]);
    let (ok, _, err) = cli(&["sample", "--model", dir.to_str().unwrap()]);
    assert_one_line_error(ok, &err, &["txt2img"]);
    // SDXL: a second text encoder; SD3: a transformer.
    for (name, key, words) in [
        ("cli-sdxl", "text_encoder_2", ["SDXL", "text_encoder_2"]),
        ("cli-sd3", "transformer", ["SD3", "transformer"]),
    ] {
        let dir = sd_pipeline::assemble_as("sd1", name);
        edit_json(&dir.join("model_index.json"), |v| {
            v[key] = serde_json::json!(["transformers", "CLIPTextModelWithProjection"])
        });
        let (ok, _, err) = run(&dir, &[]);
        assert_one_line_error(ok, &err, &words);
    }
    let dir = sd_pipeline::assemble_as("sd1", "cli-no-tokenizer");
    edit_json(&dir.join("model_index.json"), |v| {
        v.as_object_mut().unwrap().remove("tokenizer");
    });
    let (ok, _, err) = run(&dir, &[]);
    assert_one_line_error(ok, &err, &["tokenizer"]);
    let dir = sd_pipeline::assemble_as("sd1", "cli-no-text-encoder");
    std::fs::remove_dir_all(dir.join("text_encoder")).unwrap();
    let (ok, _, err) = run(&dir, &[]);
    assert_one_line_error(ok, &err, &["text_encoder", "missing"]);
    let dir = sd_pipeline::assemble_as("sd1", "cli-width");
    edit_json(&dir.join("unet/config.json"), |v| v["cross_attention_dim"] = 64.into());
    let (ok, _, err) = run(&dir, &[]);
    assert_one_line_error(ok, &err, &["text encoder's width is 32", "cross_attention_dim is 64"]);
}

/// `info` plans a Stable Diffusion 1.5 run at 512x512 from its configs alone (nothing loaded):
/// the real architectures' parameter counts, each part's memory, the decode's tiling.
#[test]
fn info_plans_stable_diffusion_at_real_size_from_the_configs() {
    let dir = sd_pipeline::sd15_configs();
    let (ok, out, err) =
        cli(&["info", "--model", dir.to_str().unwrap(), "--height", "512", "--width", "512"]);
    assert!(ok, "{err}");
    // diffusers' and transformers' counts for SD 1.5's unet and text encoder.
    assert!(out.contains("unet (2 rows of 4x64x64 latents a step): 859,520,964 parameters"), "{out}");
    assert!(out.contains("text encoder (2 prompt rows): 123,060,480 parameters"), "{out}");
    assert!(out.contains("not run: "), "{out}");
    assert!(out.contains("in all: "), "{out}");
    let (ok, _, err) = cli(&["info", "--model", dir.to_str().unwrap(), "--height", "500"]);
    assert_one_line_error(ok, &err, &["--height 500", "multiple of 8"]);
}

fn sd_golden(file: &str) -> String {
    format!("{}/tests/golden/sd_pipeline/{file}", env!("CARGO_MANIFEST_DIR"))
}

/// `img2img --prompt` and `inpaint --prompt` from the edit goldens' noise with the posteriors at
/// their mode write diffusers' decoded images (StableDiffusionImg2ImgPipeline, and
/// StableDiffusionInpaintPipeline with a 9-channel inpainting UNet).
#[test]
fn img2img_and_inpaint_with_a_prompt_write_diffusers_images() {
    use wgpu_diffusion::model::tensors::read_safetensors;
    let out = scratch("text-edit");
    let worst = |npy: &std::path::Path, want: &[f32]| {
        let (_, got) = wgpu_diffusion::io::npy::read(npy).unwrap();
        assert_eq!(got.len(), want.len());
        got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max)
    };
    // img2img, SD 1.x-shaped, strength 0.6.
    let dir = sd_pipeline::assemble_as("sd1", "cli-img2img-prompt");
    let g = read_safetensors(std::path::Path::new(&sd_golden("sd1-img2img.safetensors"))).unwrap();
    let noise = out.join("noise.npy");
    wgpu_diffusion::io::npy::write(&noise, &[1, 4, 8, 8], &g["img2img.noise"].data).unwrap();
    let (png, npy) = (out.join("img2img.png"), out.join("img2img.npy"));
    let (ok, _, err) = cli(&[
        "img2img",
        "--model",
        dir.to_str().unwrap(),
        "--image",
        &sd_golden("input-64.png"),
        "--prompt",
        "a red fox in the snow",
        "--negative-prompt",
        "blurry",
        "--strength",
        "0.6",
        "--steps",
        "10",
        "--posterior",
        "mode",
        "--init-noise",
        noise.to_str().unwrap(),
        "--save-npy",
        npy.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let w = worst(&npy, &g["img2img.decoded"].data);
    assert!(w <= 2e-3, "img2img --prompt differs from diffusers by {w}");
    let text = wgpu_diffusion::io::images::png_text(&png).unwrap();
    assert!(text.iter().any(|t| t.0 == "parameters" && t.1.ends_with("Denoising strength: 0.6")), "{text:?}");

    // inpaint with the 9-channel UNet, strength 1, three images of the golden's noise: each is
    // diffusers' image (the further channels on every row of a micro-batch).
    let dir = sd_pipeline::assemble_with_unet("sd1", "cli-inpaint-prompt", "sd1-inpaint");
    let g = read_safetensors(std::path::Path::new(&sd_golden("sd1-inpaint.safetensors"))).unwrap();
    let three: Vec<f32> = g["inpaint9.noise"].data.repeat(3);
    wgpu_diffusion::io::npy::write(&noise, &[3, 4, 8, 8], &three).unwrap();
    let (png, npy) = (out.join("inpaint.png"), out.join("inpaint.npy"));
    let (ok, _, err) = cli(&[
        "inpaint",
        "--model",
        dir.to_str().unwrap(),
        "--image",
        &sd_golden("input-64.png"),
        "--mask",
        &sd_golden("mask-64.png"),
        "--prompt",
        "a red fox",
        "--negative-prompt",
        "blurry",
        "--steps",
        "6",
        "--batch",
        "3",
        "--posterior",
        "mode",
        "--init-noise",
        noise.to_str().unwrap(),
        "--save-npy",
        npy.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let w = worst(&npy, &g["inpaint9.decoded"].data.repeat(3));
    assert!(w <= 2e-3, "inpaint --prompt differs from diffusers by {w}");
    assert!(png.is_file());
}

/// Inpainting with SD's plain 4-channel UNet over a batch of 3 from the seed: every image keeps
/// the image's latents (the posterior's mode, diffusers') exactly where the latent mask keeps,
/// and the three differ in the hole.
#[test]
fn inpaint_blend_keeps_the_image_latents_outside_the_mask_for_every_image() {
    use wgpu_diffusion::model::tensors::read_safetensors;
    let out = scratch("inpaint-blend");
    let dir = sd_pipeline::assemble_as("sd1", "cli-inpaint-blend");
    let g = read_safetensors(std::path::Path::new(&sd_golden("sd1-inpaint.safetensors"))).unwrap();
    let latents = out.join("latents.npy");
    let (ok, _, err) = cli(&[
        "inpaint",
        "--model",
        dir.to_str().unwrap(),
        "--image",
        &sd_golden("input-64.png"),
        "--mask",
        &sd_golden("mask-64.png"),
        "--prompt",
        "a red fox",
        "--steps",
        "4",
        "--batch",
        "3",
        "--seed",
        "5",
        "--posterior",
        "mode",
        "--save-latents",
        latents.to_str().unwrap(),
        "--out-dir",
        out.join("pngs").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let (shape, got) = wgpu_diffusion::io::npy::read(&latents).unwrap();
    assert_eq!(shape, vec![3, 4, 8, 8]);
    let (image, mask) = (&g["inpaint4.image_latents"].data, &g["inpaint4.mask_latent"].data);
    let (mut kept, mut hole) = (0, 0);
    for (k, z) in got.chunks(256).enumerate() {
        for (i, (&a, &b)) in z.iter().zip(image).enumerate() {
            if mask[i % 64] == 0.0 {
                assert!((a - b).abs() <= 1e-5, "image {k}, value {i}: {a} kept as {b}");
                kept += 1;
            } else if k > 0 && (a - got[i]).abs() > 1e-3 {
                hole += 1;
            }
        }
    }
    assert!(kept > 0 && hole > 0, "kept {kept}, differing in the hole {hole}");
    for k in 0..3 {
        assert!(out.join(format!("pngs/{k:06}.png")).is_file());
    }
}

#[test]
fn bad_text_edit_input_is_one_line() {
    let dir = sd_pipeline::assemble_as("sd1", "cli-bad-inpaint");
    let inpaint = |extra: &[&str]| {
        let mut args = vec!["inpaint", "--model", dir.to_str().unwrap(), "--prompt", "a fox", "--steps", "2"];
        args.extend_from_slice(extra);
        cli(&args)
    };
    let image = sd_golden("input-64.png");
    let (ok, _, err) = inpaint(&["--image", &image, "--mask", &input("mask-centre.png")]);
    assert_one_line_error(ok, &err, &["same size"]);
    let black = scratch("bad-inpaint").join("black.png");
    image::GrayImage::new(64, 64).save(&black).unwrap();
    let (ok, _, err) = inpaint(&["--image", &image, "--mask", black.to_str().unwrap()]);
    assert_one_line_error(ok, &err, &["black everywhere", "white is repainted"]);
    let mask = sd_golden("mask-64.png");
    let (ok, _, err) = inpaint(&["--image", &image, "--mask", &mask, "--jump-length", "3"]);
    assert_one_line_error(ok, &err, &["--jump-length", "Stable Diffusion"]);
    let (ok, _, err) = inpaint(&["--image", &image, "--mask", &mask, "--strength", "1.5"]);
    assert_one_line_error(ok, &err, &["--strength 1.5"]);
    // RePaint takes no prompt's flags; a prompt needs a Stable Diffusion folder.
    let (ok, _, err) = cli(&["inpaint", "--image", &image, "--mask", &mask, "--strength", "0.5"]);
    assert_one_line_error(ok, &err, &["--strength", "--prompt"]);
    let (ok, _, err) = cli(&["inpaint", "--image", &image, "--mask", &mask, "--prompt", "a fox"]);
    assert_one_line_error(ok, &err, &["--prompt needs --model"]);
    // An inpainting UNet runs only under inpaint.
    let dir = sd_pipeline::assemble_with_unet("sd1", "cli-inpaint-unet", "sd1-inpaint");
    let (ok, _, err) =
        cli(&["txt2img", "--model", dir.to_str().unwrap(), "--prompt", "a fox", "--steps", "2"]);
    assert_one_line_error(ok, &err, &["inpainting unet", "inpaint --prompt"]);
    let (ok, _, err) = cli(&[
        "img2img",
        "--model",
        dir.to_str().unwrap(),
        "--image",
        &image,
        "--prompt",
        "a fox",
        "--steps",
        "2",
    ]);
    assert_one_line_error(ok, &err, &["inpainting unet", "inpaint --prompt"]);
}
