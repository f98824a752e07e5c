//! `convjit bench`: variants, sums over a file, JSON, the roofline plot.

use super::*;

#[test]
fn bench_times_a_copy_of_the_input_where_the_output_is_as_large() {
    // The memory roof at the layer's own sizes: a depthwise layer's input
    // and output are the same size; the textbook layers' are not.
    let dir = tempfile::tempdir().unwrap();
    let dw = dir.path().join("dw.conv");
    std::fs::write(
        &dw,
        "layer d { input 16x16x32; d: depthwise 3x3, pad same }\n",
    )
    .unwrap();
    let report = |file: &str, extra: &[&str]| {
        let args = [
            "bench",
            file,
            "--seconds",
            "0.02",
            "--no-interp",
            "--no-baselines",
        ];
        let o = convjit(&[&args[..], extra].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let json: serde_json::Value = serde_json::from_str(report(s(&dw), &["--json"]).trim()).unwrap();
    assert!(json["copy_io_us"].as_f64().unwrap() > 0.0, "{json}");
    let variants = json["results"].as_array().unwrap();
    assert!(variants.iter().all(|r| r["variant"] != "copy-io"), "{json}");
    let text = report(s(&dw), &[]);
    assert!(text.contains("copy of the input to the output: "), "{text}");
    let json = report(
        "examples/textbook.conv",
        &["--json", "--layer", "textbook_separable"],
    );
    let json: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert!(json["copy_io_us"].is_null(), "{json}");
}

#[test]
fn bench_sums_the_layers_of_a_file() {
    // Two layers: the table ends with their sum; --json adds it only when
    // asked (--total), as a line without a "layer" key.
    let args = [
        "bench",
        "examples/textbook.conv",
        "--seconds",
        "0.02",
        "--no-interp",
        "--no-baselines",
    ];
    let o = convjit(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let total = text.split("total over 2 layers: 1,282,752 MACs").nth(1);
    assert!(total.is_some_and(|t| t.contains("\n  jit ")), "{text}");
    let lines = |extra: &[&str]| -> Vec<serde_json::Value> {
        let o = convjit(&[&args[..], &["--json"], extra].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let plain = lines(&[]);
    assert_eq!(plain.len(), 2);
    assert!(plain.iter().all(|r| r["layer"].is_string()));
    let with = lines(&["--total"]);
    assert_eq!(with.len(), 3);
    let (layers, sum) = (&with[..2], &with[2]);
    assert_eq!(sum["total"], true);
    assert!(sum.get("layer").is_none(), "{sum}");
    assert_eq!(sum["macs"], 1_282_752);
    assert_eq!(
        sum["layers"],
        serde_json::json!(["textbook_standard", "textbook_separable"])
    );
    let median = |r: &serde_json::Value, name: &str| {
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["variant"] == name)
            .map(|v| v["median_us"].as_f64().unwrap())
    };
    // Every variant that ran on both layers, summed (FMA loops are not
    // layers' times); the jit's first.
    let names: Vec<&str> = sum["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["variant"].as_str().unwrap())
        .collect();
    assert_eq!(names[0], "jit");
    assert!(names.iter().all(|n| !n.ends_with("-peak")), "{names:?}");
    for name in names {
        // jit-unfused is timed where the planner fuses; elsewhere the
        // planned kernel is the unfused one.
        let want: f64 = layers
            .iter()
            .map(|r| {
                median(r, name)
                    .or_else(|| (name == "jit-unfused").then(|| median(r, "jit")).flatten())
                    .unwrap()
            })
            .sum();
        let got = median(sum, name).unwrap();
        assert!((got - want).abs() < 0.02, "{name}: {got} vs {want}");
    }
    // These two layers do not chain (the second does not take the
    // first's output): no network to run one after another.
    assert!(sum.get("chained").is_none(), "{sum}");
    // --total without --json is a usage error.
    let o = convjit(&[&args[..], &["--total"]].concat());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // Layers that chain are also timed one after another, as a network.
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("net.conv");
    std::fs::write(
        &net,
        "layer a { input 8x8x4; c: pointwise 8, relu }\n\
         layer b { input 8x8x8; d: depthwise 3x3, stride 2, pad same }\n",
    )
    .unwrap();
    let o = convjit(&[
        "bench",
        s(&net),
        "--seconds",
        "0.02",
        "--no-interp",
        "--no-baselines",
        "--json",
        "--total",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let sum: serde_json::Value = serde_json::from_str(stdout(&o).lines().last().unwrap()).unwrap();
    let chained = sum["chained"].as_array().unwrap();
    assert_eq!(chained[0]["variant"], "jit", "{sum}");
    assert!(chained
        .iter()
        .all(|v| v["median_us"].as_f64().unwrap() > 0.0));
}

#[test]
fn bench_reports_jit_and_interpreter_as_json() {
    let o = convjit(&[
        "bench",
        "examples/textbook.conv",
        "--layer",
        "textbook_separable",
        "--json",
        "--seconds",
        "0.05",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(r["layer"], "textbook_separable");
    assert_eq!(r["macs"], 53_952);
    let variants: Vec<_> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["variant"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(variants[0], "jit");
    assert!(variants.contains(&"interp".to_string()), "{variants:?}");
    assert!(variants.contains(&"naive".to_string()), "{variants:?}");
    for v in r["results"].as_array().unwrap() {
        assert!(v["median_us"].as_f64().unwrap() > 0.0);
        assert!(v["gflops"].as_f64().unwrap() > 0.0);
    }
    assert!(r["max_abs_diff_jit_vs_interp"].as_f64().unwrap() < 1e-4);
    // Every code generator the host runs appears, the chosen one as "jit",
    // the others as "jit-NAME", each checked against the interpreter.
    let chosen = r["backend"].as_str().unwrap();
    let available = r["backends_available"].as_array().unwrap();
    assert!(available.iter().any(|b| b == chosen), "{available:?}");
    for b in available.iter().map(|b| b.as_str().unwrap()) {
        let name = format!("jit-{b}");
        assert_eq!(
            variants.contains(&name),
            b != chosen,
            "{name}: {variants:?}"
        );
    }
    // A FMA loop per vector width the host has; every row is a share of
    // the widest one measured (which is itself 100%).
    let notes: Vec<&str> = r["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let mut widest = None;
    for bits in [128, 256, 512] {
        let row = format!("fma{bits}-peak");
        let measured = r[format!("measured_peak_{bits}_gflops")].as_f64();
        assert_eq!(variants.contains(&row), measured.is_some(), "{row}");
        let noted = notes.iter().any(|n| n.starts_with(&row));
        assert_eq!(noted, measured.is_none(), "{row}: {notes:?}");
        if measured.is_some() {
            widest = Some(bits);
        }
    }
    assert_eq!(r["widest_measured_peak_bits"].as_u64(), widest);
    for v in r["results"].as_array().unwrap() {
        let name = v["variant"].as_str().unwrap();
        if let Some(bits) = widest {
            let pct = v["pct_widest_measured_peak"].as_f64().unwrap();
            if name == format!("fma{bits}-peak") {
                assert_eq!(pct, 100.0);
            }
        }
        if name.starts_with("jit") || ["naive", "sse128", "avx256", "gemm"].contains(&name) {
            let d = v["max_abs_diff_vs_interp"].as_f64().unwrap();
            assert!(d < 1e-4, "{name}: {d}");
        }
    }
    // The 256-bit baseline runs where the CPU has AVX2 and FMA, and a note
    // says why where it does not.
    let avx256 = variants.contains(&"avx256".to_string());
    assert_ne!(avx256, notes.iter().any(|n| n.starts_with("avx256")));
}

#[test]
fn bench_plots_a_roofline_with_peer_points() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("roof.svg");
    let peers = dir.path().join("peers.json");
    // The peers' format (bench_peers.py --out-json), matched by MAC count.
    std::fs::write(
        &peers,
        r#"{"layers": [{"name": "tb_sep", "macs": 53952,
             "results": {"ort": {"full": {"gflops": 12.5}}}}]}"#,
    )
    .unwrap();
    let mut args = [
        "bench",
        "examples/textbook.conv",
        "--layer",
        "textbook_separable",
        "--seconds",
        "0.02",
        "--no-interp",
        "--no-baselines",
        "--json",
        "--plot",
        s(&svg),
        "--peers",
        s(&peers),
    ];
    let o = convjit(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(report["memcpy_gbs"].as_f64().unwrap() > 0.0);
    assert_eq!(
        report["min_traffic_bytes"],
        4 * (12 * 12 * 3 + 8 * 8 * 256 + 5 * 5 * 3 + 3 * 256)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    let variants: Vec<&str> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["variant"].as_str().unwrap())
        .filter(|v| !v.ends_with("-peak"))
        .collect();
    // One point per variant, one for the peer (matched to this layer by
    // its MACs), and a legend marker for each of the four kinds of point.
    assert_eq!(
        text.matches("<circle").count(),
        variants.len() + 1 + 4,
        "{text}"
    );
    // The layer, numbered at its point and in the key.
    assert!(text.contains("\n 1  textbook_separable\n"), "{text}");
    assert!(text.contains("\n1\n"));
    assert!(text.contains("\npeers\n"));
    // A peers file that is not the peers' format: exit 1, no plot.
    std::fs::remove_file(&svg).unwrap();
    std::fs::write(&peers, "{}").unwrap();
    let o = convjit(&args);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("layers"), "{}", stderr(&o));
    assert!(!svg.exists());
    // An endless one is refused at its limit, not read into memory.
    let i = args.iter().position(|a| *a == "--peers").unwrap();
    args[i + 1] = "/dev/zero";
    let o = convjit(&args);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("/dev/zero: the file is larger than the limit"),
        "{}",
        stderr(&o)
    );
    assert!(!svg.exists());
}

/// Under an address-space limit (`ulimit -v`) anywhere from too small to
/// enough, bench and run either work or refuse with exit 1: never
/// an abort (exit 134: an allocation the budget did not see, or one just
/// past it) or a panic (a timing closure's `expect` on a failed run).
#[cfg(target_os = "linux")]
#[test]
fn address_space_limits_are_refusals_not_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let conv = dir.path().join("m.conv");
    std::fs::write(
        &conv,
        "layer m {\n  input 256x256x64\n  a: pointwise 64\n  b: depthwise 3x3, pad same\n}\n",
    )
    .unwrap();
    // (verify's reference is slow in a debug build; the interpreter's
    // budget is run's with --engine interp.) bench aborted at 170 and 200
    // MiB here without the budget's margin: fine steps around there.
    let bench: &[&str] = &[
        "bench",
        s(&conv),
        "--seconds",
        "0.01",
        "--rounds",
        "1",
        "--no-interp",
    ];
    let run: &[&str] = &["run", s(&conv)];
    let interp: &[&str] = &["run", s(&conv), "--engine", "interp"];
    let cases = (150..=300).step_by(10).map(|mib| (mib, bench)).chain(
        (150..=600)
            .step_by(75)
            .flat_map(|mib| [(mib, run), (mib, interp)]),
    );
    for (mib, args) in cases {
        let o = convjit_limited(args, mib << 20);
        assert!(
            matches!(o.status.code(), Some(0 | 1)),
            "{args:?} under {mib} MiB: {:?}\n{}",
            o.status,
            stderr(&o)
        );
    }
}

/// A layer of more than 2^31 multiply-accumulates: the interpreter and the
/// hand-written baselines (seconds a call, a few calls a round: a 2^33
/// layer took 275 s) are left out with a note, the kernels timed.
#[test]
fn bench_leaves_out_slow_variants_on_large_layers() {
    let dir = tempfile::tempdir().unwrap();
    let conv = dir.path().join("big.conv");
    std::fs::write(
        &conv,
        "layer big {\n  input 128x128x264\n  p: pointwise 512\n}\n",
    )
    .unwrap();
    let o = convjit(&[
        "bench",
        s(&conv),
        "--seconds",
        "0.01",
        "--rounds",
        "1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let notes = r["notes"].to_string();
    assert!(notes.contains("baselines: not measured"), "{notes}");
    assert!(notes.contains("interp: not measured"), "{notes}");
    let variants: Vec<&str> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["variant"].as_str().unwrap())
        .collect();
    assert!(variants.contains(&"jit"), "{variants:?}");
    assert!(
        !variants.iter().any(|v| *v == "interp" || *v == "naive"),
        "{variants:?}"
    );
}
