//! `convjit bench --plot roofline.svg`: a log-log roofline (x = FLOPs per
//! byte of the layer's minimum memory traffic, y = GFLOP/s) drawn with
//! `plotters`' SVG backend. Roofs: the FMA peaks and the memory bandwidth
//! measured in the same run; one labelled point per layer and variant, and
//! peer points from `peers/bench_peers.py --out-json`.

use plotters::prelude::*;

/// One measured kernel.
#[derive(Clone, Debug)]
pub struct Point {
    pub label: String,
    /// FLOPs per byte of minimum traffic (input + weights + output).
    pub intensity: f64,
    pub gflops: f64,
    /// A peer framework's measurement (drawn in another colour).
    pub peer: bool,
}

/// The ceilings.
pub struct Roofs {
    /// (name, GFLOP/s), e.g. ("fma512-peak", 180.0).
    pub peaks: Vec<(String, f64)>,
    /// GB/s, and what it is (how it was measured).
    pub bandwidth: f64,
    pub bandwidth_label: String,
}

/// The plot as SVG text: one `<circle>` per point, each labelled.
pub fn svg(title: &str, points: &[Point], roofs: &Roofs) -> Result<String, String> {
    let top_peak = roofs.peaks.iter().map(|p| p.1).fold(1.0, f64::max);
    let finite = |v: f64| v.is_finite() && v > 0.0;
    let xs = points.iter().map(|p| p.intensity).filter(|&v| finite(v));
    let ys = points.iter().map(|p| p.gflops).filter(|&v| finite(v));
    // Wide enough for every point and the ridges of every roof.
    let ridge_max = top_peak / roofs.bandwidth.max(1e-9);
    let x_lo = xs.clone().fold(ridge_max / 10.0, f64::min).min(0.1) / 2.0;
    let x_hi = xs.fold(ridge_max * 10.0, f64::max) * 2.0;
    let y_lo = ys.clone().fold(top_peak, f64::min).min(0.1) / 2.0;
    let y_hi = ys.fold(top_peak, f64::max) * 2.0;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (1200, 800)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d((x_lo..x_hi).log_scale(), (y_lo..y_hi).log_scale())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("arithmetic intensity (FLOP per byte of input + weights + output)")
            .y_desc("GFLOP/s")
            .draw()
            .map_err(|e| e.to_string())?;
        // Each roof: min(peak, bandwidth * intensity), sampled log-evenly.
        let samples: Vec<f64> = (0..=200)
            .map(|i| x_lo * (x_hi / x_lo).powf(i as f64 / 200.0))
            .collect();
        for (i, (name, peak)) in roofs.peaks.iter().enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            let line = samples.iter().map(|&x| (x, peak.min(roofs.bandwidth * x)));
            chart
                .draw_series(LineSeries::new(line, colour.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(format!(
                    "{name} {peak:.1} GFLOP/s, {}",
                    roofs.bandwidth_label
                ))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour));
        }
        for p in points
            .iter()
            .filter(|p| finite(p.intensity) && finite(p.gflops))
        {
            let colour = if p.peer { RED } else { BLUE };
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((p.intensity, p.gflops))
                        + Circle::new((0, 0), 4, colour.filled())
                        + Text::new(p.label.clone(), (6, -10), ("sans-serif", 11)),
                ))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Peer points from `bench_peers.py --out-json`: per peer layer and
/// framework, its GFLOP/s, placed at the intensity of the layer of this run
/// with the same MAC count (`ours`: (macs, intensity)); peer layers with no
/// such layer are left out.
pub fn peer_points(json: &serde_json::Value, ours: &[(u64, f64)]) -> Vec<Point> {
    let mut points = Vec::new();
    for l in json["layers"].as_array().into_iter().flatten() {
        let Some(&(_, intensity)) = ours.iter().find(|(m, _)| Some(*m) == l["macs"].as_u64())
        else {
            continue;
        };
        let name = l["name"].as_str().unwrap_or("?");
        for (fw, r) in l["results"].as_object().into_iter().flatten() {
            if let Some(g) = r["full"]["gflops"].as_f64() {
                points.push(Point {
                    label: format!("{name} {fw}"),
                    intensity,
                    gflops: g,
                    peer: true,
                });
            }
        }
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_svg_holds_every_point_and_roof() {
        let points = vec![
            Point {
                label: "dw jit".into(),
                intensity: 0.4,
                gflops: 12.0,
                peer: false,
            },
            Point {
                label: "pw jit-avx2".into(),
                intensity: 30.0,
                gflops: 95.0,
                peer: false,
            },
            Point {
                label: "pw ort".into(),
                intensity: 30.0,
                gflops: 110.0,
                peer: true,
            },
        ];
        let roofs = Roofs {
            peaks: vec![("fma128-peak".into(), 60.0), ("fma512-peak".into(), 240.0)],
            bandwidth: 20.0,
            bandwidth_label: "memcpy 20 GB/s".into(),
        };
        let svg = svg("test", &points, &roofs).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        assert_eq!(svg.matches("<circle").count(), points.len(), "{svg}");
        for p in &points {
            // plotters writes each text element on a line of its own.
            assert!(
                svg.contains(&format!("\n{}\n", p.label)),
                "{} missing",
                p.label
            );
        }
        assert!(svg.contains("fma512-peak 240.0 GFLOP/s"));
        assert!(svg.contains("<polyline"), "roof lines");
    }

    #[test]
    fn peers_are_matched_by_macs() {
        let json = serde_json::json!({"layers": [
            {"name": "a", "macs": 100, "results": {
                "ort": {"full": {"gflops": 5.0}},
                "litert": {"full": {"error": "missing"}}}},
            {"name": "b", "macs": 7, "results": {"ort": {"full": {"gflops": 1.0}}}}
        ]});
        let p = peer_points(&json, &[(100, 2.5)]);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].label, "a ort");
        assert_eq!(p[0].intensity, 2.5);
        assert!(p[0].peer);
    }
}
