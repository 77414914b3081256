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
    /// The y values are log10 of what the axis shows (ticks read `10`, `100`, ...).
    pub log_y: bool,
}

impl Series {
    /// Whether every point has the same y: a line with nothing to say.
    pub fn is_flat(&self) -> bool {
        self.points.windows(2).all(|w| w[0].1 == w[1].1)
    }
}

/// A tick label for `v` on an axis spanning `span` whose largest magnitude is `top`: whole
/// numbers when the span is wide (`32000`, not `32000.0`), enough decimals to tell ticks apart
/// when it is narrow, and scientific notation on an axis of tiny or huge values (`3.0e-4`).
pub fn tick(v: f64, span: f64, top: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if !(1e-2..1e7).contains(&top) {
        return format!("{v:.1e}");
    }
    let decimals = (1.0 - span.abs().max(1e-12).log10().floor()).clamp(0.0, 6.0) as usize;
    format!("{v:.decimals$}")
}

/// The corner of the plot the legend covers the fewest points in (x and y scaled to 0..1).
fn legend_corner(series: &[Series], x: (f64, f64), y: (f64, f64)) -> SeriesLabelPosition {
    let scaled = |v: f64, (lo, hi): (f64, f64)| (v - lo) / (hi - lo).max(1e-300);
    let in_box = |(px, py): (f64, f64), right: bool, top: bool| {
        let (sx, sy) = (scaled(px, x), scaled(py, y));
        (if right { sx > 0.6 } else { sx < 0.4 }) && (if top { sy > 0.65 } else { sy < 0.35 })
    };
    let corners = [
        (SeriesLabelPosition::UpperRight, true, true),
        (SeriesLabelPosition::UpperLeft, false, true),
        (SeriesLabelPosition::LowerRight, true, false),
        (SeriesLabelPosition::LowerLeft, false, false),
    ];
    let covered = |right: bool, top: bool| {
        let points = series.iter().flat_map(|s| s.points.iter());
        points.filter(|&&p| in_box(p, right, top)).count()
    };
    corners
        .into_iter()
        .min_by_key(|&(_, right, top)| covered(right, top))
        .map_or(SeriesLabelPosition::UpperRight, |(pos, _, _)| pos)
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
    let (x_span, y_span) = (x1 - x0, y1 - y0);
    let (x_top, y_top) = (x0.abs().max(x1.abs()), y0.abs().max(y1.abs()));
    let y_tick = |v: &f64| match chart.log_y {
        true => tick(10f64.powf(*v), 10f64.powf(*v), 1.0),
        false => tick(*v, y_span, y_top),
    };
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
            .x_label_formatter(&|x| tick(*x, x_span, x_top))
            .y_desc(chart.y_label)
            .y_label_formatter(&y_tick)
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
            .position(legend_corner(&owned, (x0, x1), (y0, y1)))
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

    #[test]
    fn ticks_are_whole_on_wide_axes_and_exact_enough_on_narrow_ones() {
        assert_eq!(tick(32000.0, 20000.0, 40000.0), "32000");
        assert_eq!(tick(7.25, 4.0, 8.0), "7.2");
        assert_eq!(tick(0.125, 0.5, 0.6), "0.12");
        // An axis of small values is scientific throughout, not only below 1e-3.
        assert_eq!(tick(3e-4, 2e-4, 3e-3), "3.0e-4");
        assert_eq!(tick(2.5e-3, 2e-4, 3e-3), "2.5e-3");
        assert_eq!(tick(0.0, 1.0, 1.0), "0");
    }

    #[test]
    fn the_legend_goes_where_the_curves_are_not() {
        // A falling curve fills the upper left and lower right.
        let falling = vec![Series {
            name: "loss".into(),
            points: (0..100).map(|i| (i as f64, 100.0 - i as f64)).collect(),
        }];
        let pos = legend_corner(&falling, (0.0, 99.0), (1.0, 100.0));
        assert!(matches!(
            pos,
            SeriesLabelPosition::UpperRight | SeriesLabelPosition::LowerLeft
        ));
        let rising = vec![Series {
            name: "lr".into(),
            points: (0..100).map(|i| (i as f64, i as f64)).collect(),
        }];
        let pos = legend_corner(&rising, (0.0, 99.0), (0.0, 99.0));
        assert!(matches!(
            pos,
            SeriesLabelPosition::UpperLeft | SeriesLabelPosition::LowerRight
        ));
        assert!(!falling[0].is_flat());
        let flat = Series {
            name: "scale".into(),
            points: vec![(1.0, 0.0), (2.0, 0.0)],
        };
        assert!(flat.is_flat());
    }

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
            log_y: false,
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
