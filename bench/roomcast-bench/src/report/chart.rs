//! The SVG chart of `docs/BENCHMARKS.md`, drawn with plotters (SVG backend
//! only): four grouped-bar panels, roomcast beside the peer — idle memory per
//! connection, fan-out deliveries/s, server CPU per delivery, and latency in
//! the rooms scenario.

use plotters::prelude::*;

use crate::result::RunResult;

const ROOMCAST: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const PEER: RGBColor = RGBColor(0xff, 0x7f, 0x0e);

/// Reads one number out of a result.
type Metric = fn(&RunResult) -> Option<f64>;

/// One panel: categories on x, one bar per server in each.
struct Panel {
    title: String,
    unit: &'static str,
    categories: Vec<String>,
    /// `(server, values per category)`.
    series: Vec<(&'static str, RGBColor, Vec<Option<f64>>)>,
}

fn value_of(
    results: &[RunResult],
    server: &str,
    pick: impl Fn(&RunResult) -> bool,
    value: impl Fn(&RunResult) -> Option<f64>,
) -> Option<f64> {
    results
        .iter()
        .filter(|r| r.server == server && pick(r))
        .find_map(value)
}

fn panels(results: &[RunResult]) -> Vec<Panel> {
    let servers = [("roomcast", ROOMCAST), ("peer", PEER)];
    let mut panels = Vec::new();

    // Idle memory per connection, per transport and size.
    let mut idle: Vec<(String, &'static str, u64)> = Vec::new();
    for r in results.iter().filter(|r| r.scenario == "idle") {
        let key = format!("{} ×{}", r.transport.name(), r.connections);
        if !idle.iter().any(|(k, _, _)| *k == key) {
            idle.push((key, r.transport.name(), r.connections));
        }
    }
    panels.push(Panel {
        title: "Idle: server RSS per connection".into(),
        unit: "KiB",
        categories: idle.iter().map(|(k, _, _)| k.clone()).collect(),
        series: servers
            .iter()
            .map(|&(server, color)| {
                let values = idle
                    .iter()
                    .map(|(_, t, n)| {
                        value_of(
                            results,
                            server,
                            |r| {
                                r.scenario == "idle"
                                    && r.transport.name() == *t
                                    && r.connections == *n
                            },
                            |r| Some(r.resources.rss_per_connection_kib),
                        )
                    })
                    .collect();
                (server, color, values)
            })
            .collect(),
    });

    let fanout: Vec<&RunResult> = results.iter().filter(|r| r.scenario == "fanout").collect();
    let mut transports: Vec<&'static str> = Vec::new();
    for r in &fanout {
        if !transports.contains(&r.transport.name()) {
            transports.push(r.transport.name());
        }
    }
    let fanout_panel =
        |title: &str, unit: &'static str, value: &dyn Fn(&RunResult) -> Option<f64>| Panel {
            title: title.into(),
            unit,
            categories: transports
                .iter()
                .map(|t| format!("{t} ×{}", fanout.first().map_or(0, |r| r.connections)))
                .collect(),
            series: servers
                .iter()
                .map(|&(server, color)| {
                    let values = transports
                        .iter()
                        .map(|t| {
                            value_of(
                                results,
                                server,
                                |r| r.scenario == "fanout" && r.transport.name() == *t,
                                value,
                            )
                        })
                        .collect();
                    (server, color, values)
                })
                .collect(),
        };
    panels.push(fanout_panel(
        "Fan-out, one room: deliveries/s",
        "thousand/s",
        &|r| r.delivery.as_ref().map(|d| d.deliveries_per_s / 1000.0),
    ));
    panels.push(fanout_panel(
        "Fan-out: server CPU per delivery",
        "µs",
        &|r| Some(r.resources.cpu_us_per_delivery),
    ));

    let quantiles: [(&str, Metric); 3] = [
        ("p50", |r| {
            r.delivery
                .as_ref()
                .map(|d| d.latency.p50_us as f64 / 1000.0)
        }),
        ("p99", |r| {
            r.delivery
                .as_ref()
                .map(|d| d.latency.p99_us as f64 / 1000.0)
        }),
        ("p999", |r| {
            r.delivery
                .as_ref()
                .map(|d| d.latency.p999_us as f64 / 1000.0)
        }),
    ];
    panels.push(Panel {
        title: "Rooms (10 per room, fixed rate): latency".into(),
        unit: "ms",
        categories: quantiles.iter().map(|(q, _)| q.to_string()).collect(),
        series: servers
            .iter()
            .map(|&(server, color)| {
                let values = quantiles
                    .iter()
                    .map(|(_, f)| value_of(results, server, |r| r.scenario == "rooms", f))
                    .collect();
                (server, color, values)
            })
            .collect(),
    });
    panels
}

/// Renders the chart as an SVG document.
pub fn render(results: &[RunResult]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1100, 760)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (title, body) = root.split_vertically(40);
        title
            .titled(
                "roomcast vs Node.js socket.io 4 (peer): same machine, same Redis",
                ("sans-serif", 22),
            )
            .map_err(|e| e.to_string())?;
        let areas = body.split_evenly((2, 2));
        for (area, panel) in areas.iter().zip(panels(results)) {
            draw_panel(area, &panel).map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let n = panel.categories.len().max(1);
    let top = panel
        .series
        .iter()
        .flat_map(|(_, _, v)| v.iter().flatten())
        .fold(0.0f64, |a, &b| a.max(b));
    let top = if top > 0.0 { top * 1.2 } else { 1.0 };
    let categories = panel.categories.clone();
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n as f64, 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.01 {
                categories.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(panel.unit)
        .draw()?;
    let groups = panel.series.len().max(1) as f64;
    let width = 0.8 / groups;
    for (s, (server, color, values)) in panel.series.iter().enumerate() {
        let bars = values.iter().enumerate().filter_map(|(i, v)| {
            let v = (*v)?;
            let x0 = i as f64 + 0.1 + s as f64 * width;
            Some(Rectangle::new(
                [(x0, 0.0), (x0 + width * 0.95, v)],
                color.filled(),
            ))
        });
        chart
            .draw_series(bars)?
            .label(*server)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        let labels = values.iter().enumerate().filter_map(|(i, v)| {
            let v = (*v)?;
            let x0 = i as f64 + 0.1 + s as f64 * width;
            let text = if v >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            };
            Some(Text::new(text, (x0, v + top * 0.02), ("sans-serif", 12)))
        });
        chart.draw_series(labels)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    Ok(())
}
