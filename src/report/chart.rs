//! One line chart as an SVG string, drawn with plotters' SVG backend. Text becomes SVG
//! `<text>` elements that the browser sets in its own sans-serif font, so drawing needs no
//! font files and no native libraries.

use plotters::prelude::*;

/// Width and height of every chart, in SVG pixels.
pub const SIZE: (u32, u32) = (760, 330);

/// Colours of the series, in order.
const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// A named series of (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// What to draw.
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: Vec<Series>,
}

/// (min, max) over all points of `f`, widened when flat so the axis has a span.
fn range(series: &[Series], f: impl Fn(&(f64, f64)) -> f64) -> (f64, f64) {
    let vals = series.iter().flat_map(|s| s.points.iter().map(&f));
    let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        lo.abs().max(1.0) * 0.1
    };
    (lo - pad, hi + pad)
}

fn draw_err<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> String {
    e.to_string()
}

/// The chart as an SVG document; `None` when no series has a point.
pub fn svg(chart: &Chart) -> Result<Option<String>, String> {
    let owned: Vec<Series> = chart
        .series
        .iter()
        .map(|s| Series {
            name: s.name.clone(),
            points: s
                .points
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    if owned.is_empty() {
        return Ok(None);
    }
    let (x0, x1) = range(&owned, |p| p.0);
    let (y0, y1) = range(&owned, |p| p.1);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(chart.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70);
        let mut c = builder
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .x_desc(chart.x_label)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc(chart.y_label)
            .draw()
            .map_err(draw_err)?;
        for (i, s) in owned.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            c.draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(draw_err)?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        }
        c.configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn polyline_points(svg: &str) -> Vec<usize> {
        svg.split("<polyline")
            .skip(1)
            .map(|p| {
                let start = p.find("points=\"").unwrap() + 8;
                let end = p[start..].find('"').unwrap();
                p[start..start + end].split_whitespace().count()
            })
            .collect()
    }

    #[test]
    fn one_polyline_per_series_with_every_point() {
        let chart = Chart {
            title: "loss",
            x_label: "step",
            y_label: "loss",
            series: vec![
                Series {
                    name: "train".into(),
                    points: (1..=50).map(|i| (i as f64, 10.0 / i as f64)).collect(),
                },
                Series {
                    name: "val".into(),
                    points: vec![(10.0, 1.5), (20.0, 0.8), (30.0, f64::NAN)],
                },
            ],
        };
        let svg = svg(&chart).unwrap().unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        // Series lines (with the two legend samples, which are 2-point polylines).
        let counts = polyline_points(&svg);
        assert!(counts.contains(&50) && counts.contains(&2), "{counts:?}");
        assert!(svg.contains("\ntrain\n") && svg.contains("\nval\n"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        let flat = Chart {
            series: vec![Series {
                name: "scale".into(),
                points: vec![(1.0, 1.0), (2.0, 1.0)],
            }],
            ..chart
        };
        assert!(!super::svg(&flat).unwrap().unwrap().contains("NaN"));
        let empty = Chart {
            series: vec![Series {
                name: "nothing finite".into(),
                points: vec![(1.0, f64::NAN)],
            }],
            ..flat
        };
        assert!(super::svg(&empty).unwrap().is_none());
    }
}
