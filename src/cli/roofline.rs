//! `convjit bench --plot roofline.svg`: a log-log roofline (x = FLOPs per
//! byte of the layer's minimum memory traffic, y = GFLOP/s) drawn with
//! `plotters`' SVG backend. Roofs: the FMA peaks and the memory bandwidth
//! measured in the same run; one labelled point per layer and variant, and
//! peer points from `peers/bench_peers.py --out-json`.

use plotters::coord::Shift;
use plotters::prelude::*;

/// One measured kernel.
#[derive(Clone, Debug)]
pub struct Point {
    pub layer: String,
    pub variant: String,
    /// FLOPs per byte of minimum traffic (input + weights + output).
    pub intensity: f64,
    pub gflops: f64,
    /// A peer framework's measurement (drawn in another colour).
    pub peer: bool,
}

/// How a point is drawn: the chosen kernel, convjit's other variants,
/// the hand-written baselines, the peers.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Jit,
    Variant,
    Baseline,
    Peer,
}

impl Kind {
    fn of(p: &Point) -> Kind {
        match p.variant.as_str() {
            _ if p.peer => Kind::Peer,
            "jit" => Kind::Jit,
            v if v.starts_with("jit-") => Kind::Variant,
            _ => Kind::Baseline,
        }
    }

    const ALL: [Kind; 4] = [Kind::Jit, Kind::Variant, Kind::Baseline, Kind::Peer];

    fn style(self) -> (RGBColor, &'static str) {
        match self {
            // The roofs are one core's: on several threads (the default)
            // the planned kernel may pass them.
            Kind::Jit => (
                RGBColor(20, 60, 200),
                "convjit (jit: the planned kernel, every core unless --threads 1)",
            ),
            Kind::Variant => (
                RGBColor(120, 170, 235),
                "convjit variants (other generators, unfused, threads)",
            ),
            Kind::Baseline => (RGBColor(150, 150, 150), "hand-written baselines"),
            Kind::Peer => (RGBColor(210, 40, 40), "peers"),
        }
    }
}

/// The ceilings.
pub struct Roofs {
    /// (name, GFLOP/s), e.g. ("fma512-peak", 180.0).
    pub peaks: Vec<(String, f64)>,
    /// GB/s, and what it is (how it was measured).
    pub bandwidth: f64,
    pub bandwidth_label: String,
}

/// A pixel position, and a label's (width, height) in pixels.
type Px = (i32, i32);

/// Pixel size of a label of `chars` characters in the 12-pixel font.
fn label_size(chars: usize) -> (i32, i32) {
    (7 * chars as i32 + 2, 13)
}

/// Positions (top-left corners) for labels of the given sizes next to
/// their points, none overlapping another label or any point: each takes
/// the first free spot of a ring of candidates around its point, at
/// growing distance (with a leader line drawn when it is not adjacent).
pub fn place_labels(points: &[Px], anchors: &[(Px, Px)]) -> Vec<Px> {
    let overlaps = |a: (i32, i32, i32, i32), b: (i32, i32, i32, i32)| {
        a.0 < b.0 + b.2 && b.0 < a.0 + a.2 && a.1 < b.1 + b.3 && b.1 < a.1 + a.3
    };
    let mut taken: Vec<(i32, i32, i32, i32)> =
        points.iter().map(|&(x, y)| (x - 4, y - 4, 9, 9)).collect();
    let mut placed = Vec::new();
    for &((x, y), (w, h)) in anchors {
        let mut spot = (x + 6, y - h - 2);
        'search: for r in 1..40 {
            let d = 6 * r;
            for (dx, dy) in [
                (d, -h - 2),
                (d, 2),
                (-d - w, -h - 2),
                (-d - w, 2),
                (-w / 2, -d - h),
                (-w / 2, d),
                (d, -h / 2),
                (-d - w, -h / 2),
            ] {
                let b = (x + dx, y + dy, w, h);
                if !taken.iter().any(|&t| overlaps(b, t)) {
                    spot = (b.0, b.1);
                    break 'search;
                }
            }
        }
        taken.push((spot.0, spot.1, w, h));
        placed.push(spot);
    }
    placed
}

/// The plot as SVG text: one `<circle>` per point; each layer numbered at
/// its `jit` point (labels placed so none overlaps another or a point),
/// with a key of the numbers, and a legend of the point kinds and roofs.
pub fn svg(title: &str, points: &[Point], roofs: &Roofs) -> Result<String, String> {
    let finite = |v: f64| v.is_finite() && v > 0.0;
    let points: Vec<&Point> = points
        .iter()
        .filter(|p| finite(p.intensity) && finite(p.gflops))
        .collect();
    let range = Range::of(&points, roofs);
    // Layers in first-seen order, numbered from 1.
    let mut layers: Vec<&str> = Vec::new();
    for p in &points {
        if !layers.contains(&p.layer.as_str()) {
            layers.push(&p.layer);
        }
    }
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (1400, 900)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (plot_area, key_area) = root.split_horizontally(1100);
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(
                (range.x_lo..range.x_hi).log_scale(),
                (range.y_lo..range.y_hi).log_scale(),
            )
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("arithmetic intensity (FLOP per byte of input + weights + output)")
            .y_desc("GFLOP/s")
            .draw()
            .map_err(|e| e.to_string())?;
        draw_roofs(&mut chart, roofs, &range)?;
        draw_points(&mut chart, &points)?;
        draw_layer_numbers(&root, &chart, &points, &layers)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        draw_key(&key_area, &layers)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// The axes' extent: wide enough for every point and the ridges of every
/// roof, with a margin.
struct Range {
    x_lo: f64,
    x_hi: f64,
    y_lo: f64,
    y_hi: f64,
}

impl Range {
    fn of(points: &[&Point], roofs: &Roofs) -> Range {
        let top_peak = roofs.peaks.iter().map(|p| p.1).fold(1.0, f64::max);
        let xs = points.iter().map(|p| p.intensity);
        let ys = points.iter().map(|p| p.gflops);
        let ridge_max = top_peak / roofs.bandwidth.max(1e-9);
        Range {
            x_lo: xs.clone().fold(ridge_max / 10.0, f64::min).min(0.1) / 2.0,
            x_hi: xs.fold(ridge_max * 10.0, f64::max) * 2.0,
            y_lo: ys.clone().fold(top_peak, f64::min).min(0.1) / 2.0,
            y_hi: ys.fold(top_peak, f64::max) * 2.0,
        }
    }
}

/// The roofline's chart: log-log, on an SVG.
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<LogCoord<f64>, LogCoord<f64>>>;

/// Each roof: min(peak, bandwidth * intensity), sampled log-evenly, with
/// its legend entry.
fn draw_roofs(chart: &mut Chart, roofs: &Roofs, range: &Range) -> Result<(), String> {
    let (x_lo, x_hi) = (range.x_lo, range.x_hi);
    let samples: Vec<f64> = (0..=200)
        .map(|i| x_lo * (x_hi / x_lo).powf(i as f64 / 200.0))
        .collect();
    for (i, (name, peak)) in roofs.peaks.iter().enumerate() {
        let colour = Palette99::pick(i + 3).to_rgba();
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
    Ok(())
}

/// Every point, the chosen kernels last (on top), and a legend entry per
/// kind.
fn draw_points(chart: &mut Chart, points: &[&Point]) -> Result<(), String> {
    for kind in [Kind::Baseline, Kind::Variant, Kind::Peer, Kind::Jit] {
        let (colour, _) = kind.style();
        let these = points.iter().filter(|p| Kind::of(p) == kind);
        chart
            .draw_series(these.map(|p| Circle::new((p.intensity, p.gflops), 4, colour.filled())))
            .map_err(|e| e.to_string())?;
    }
    for kind in Kind::ALL {
        let (colour, name) = kind.style();
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, colour.filled()));
    }
    Ok(())
}

/// Layer numbers at their jit points (else their first), placed clear of
/// every point and each other, with a leader line where one sits away.
fn draw_layer_numbers(
    root: &DrawingArea<SVGBackend, Shift>,
    chart: &Chart,
    points: &[&Point],
    layers: &[&str],
) -> Result<(), String> {
    let px: Vec<(i32, i32)> = points
        .iter()
        .map(|p| chart.backend_coord(&(p.intensity, p.gflops)))
        .collect();
    let anchors: Vec<(Px, Px)> = layers
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let at = points
                .iter()
                .position(|p| p.layer == *l && Kind::of(p) == Kind::Jit)
                .or_else(|| points.iter().position(|p| p.layer == *l))?;
            Some((px[at], label_size((i + 1).to_string().len())))
        })
        .collect();
    let spots = place_labels(&px, &anchors);
    let font = ("sans-serif", 12).into_font().color(&BLACK);
    for (i, (&((x, y), (w, h)), &(sx, sy))) in anchors.iter().zip(&spots).enumerate() {
        // A leader line where the label sits away from its point.
        let (cx, cy) = (sx + w / 2, sy + h / 2);
        if (cx - x).abs() > w + 8 || (cy - y).abs() > h + 8 {
            root.draw(&PathElement::new([(x, y), (cx, cy)], BLACK.mix(0.4)))
                .map_err(|e| e.to_string())?;
        }
        root.draw(&Text::new((i + 1).to_string(), (sx + 1, sy), font.clone()))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The key: layer numbers and names.
fn draw_key(key_area: &DrawingArea<SVGBackend, Shift>, layers: &[&str]) -> Result<(), String> {
    let key_font = ("sans-serif", 12).into_font().color(&BLACK);
    key_area
        .draw(&Text::new("layers", (10, 40), key_font.clone()))
        .map_err(|e| e.to_string())?;
    for (i, l) in layers.iter().enumerate() {
        key_area
            .draw(&Text::new(
                format!("{:>2}  {l}", i + 1),
                (10, 60 + 16 * i as i32),
                key_font.clone(),
            ))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Peer points from `bench_peers.py --out-json`: per peer layer and
/// framework, its GFLOP/s, placed at the intensity of the layer of this run
/// with the same MAC count (`ours`: (macs, intensity, name)), under that
/// layer's name; peer layers with no such layer are left out.
pub fn peer_points(json: &serde_json::Value, ours: &[(u64, f64, String)]) -> Vec<Point> {
    let mut points = Vec::new();
    for l in json["layers"].as_array().into_iter().flatten() {
        let Some((_, intensity, layer)) =
            ours.iter().find(|(m, _, _)| Some(*m) == l["macs"].as_u64())
        else {
            continue;
        };
        for (fw, r) in l["results"].as_object().into_iter().flatten() {
            if let Some(g) = r["full"]["gflops"].as_f64() {
                points.push(Point {
                    layer: layer.clone(),
                    variant: fw.clone(),
                    intensity: *intensity,
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

    fn point(layer: &str, variant: &str, intensity: f64, gflops: f64, peer: bool) -> Point {
        Point {
            layer: layer.into(),
            variant: variant.into(),
            intensity,
            gflops,
            peer,
        }
    }

    #[test]
    fn the_svg_holds_every_point_roof_and_layer() {
        let points = vec![
            point("dw", "jit", 0.4, 12.0, false),
            point("pw", "jit", 30.0, 180.0, false),
            point("pw", "jit-avx2", 30.0, 95.0, false),
            point("pw", "sse128", 30.0, 40.0, false),
            point("pw", "ort", 30.0, 110.0, true),
        ];
        let roofs = Roofs {
            peaks: vec![("fma128-peak".into(), 60.0), ("fma512-peak".into(), 240.0)],
            bandwidth: 20.0,
            bandwidth_label: "memcpy 20 GB/s".into(),
        };
        let svg = svg("test", &points, &roofs).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        // Every point, plus one legend marker per kind.
        assert_eq!(svg.matches("<circle").count(), points.len() + 4, "{svg}");
        // plotters writes each text element on a line of its own.
        for label in [" 1  dw", " 2  pw", "1", "2", "peers"] {
            assert!(svg.contains(&format!("\n{label}\n")), "{label} missing");
        }
        assert!(svg.contains("fma512-peak 240.0 GFLOP/s"));
        assert!(svg.contains("<polyline"), "roof lines");
    }

    #[test]
    fn labels_overlap_neither_each_other_nor_points() {
        // Twenty points in a tight cluster, as a suite's pointwise layers are.
        let pts: Vec<(i32, i32)> = (0..20)
            .map(|i| (500 + 3 * (i % 5), 300 + 4 * (i / 5)))
            .collect();
        let anchors: Vec<(Px, Px)> = pts
            .iter()
            .enumerate()
            .map(|(i, &p)| (p, label_size((i + 1).to_string().len())))
            .collect();
        let spots = place_labels(&pts, &anchors);
        let boxes: Vec<(i32, i32, i32, i32)> = spots
            .iter()
            .zip(&anchors)
            .map(|(&(x, y), &(_, (w, h)))| (x, y, w, h))
            .collect();
        let overlaps = |a: (i32, i32, i32, i32), b: (i32, i32, i32, i32)| {
            a.0 < b.0 + b.2 && b.0 < a.0 + a.2 && a.1 < b.1 + b.3 && b.1 < a.1 + a.3
        };
        for (i, &a) in boxes.iter().enumerate() {
            for &b in &boxes[i + 1..] {
                assert!(!overlaps(a, b), "{a:?} {b:?}");
            }
            for &(x, y) in &pts {
                assert!(
                    !overlaps(a, (x - 4, y - 4, 9, 9)),
                    "{a:?} covers ({x}, {y})"
                );
            }
        }
    }

    #[test]
    fn peers_are_matched_by_macs() {
        let json = serde_json::json!({"layers": [
            {"name": "a", "macs": 100, "results": {
                "ort": {"full": {"gflops": 5.0}},
                "litert": {"full": {"error": "missing"}}}},
            {"name": "b", "macs": 7, "results": {"ort": {"full": {"gflops": 1.0}}}}
        ]});
        let p = peer_points(&json, &[(100, 2.5, "ours".into())]);
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].layer.as_str(), p[0].variant.as_str()),
            ("ours", "ort")
        );
        assert_eq!(p[0].intensity, 2.5);
        assert!(p[0].peer);
    }
}
