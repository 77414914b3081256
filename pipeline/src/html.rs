//! What the HTML pages of `mamba inspect --html` and `mamba report` share.

/// Escapes text for HTML content and attribute values (quoted with either quote).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The one stylesheet of both pages. Table cells are right-aligned (most hold numbers); `l`
/// marks a left-aligned (text) cell; `note` is a remark, `warn` a warning.
pub const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1600px;\
color:#222;padding:0 1em}h1{font-size:22px}h2{font-size:17px;margin-top:1.8em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;margin:.5em 0}td,th{padding:3px 10px;text-align:right;\
font-variant-numeric:tabular-nums;border-bottom:1px solid #eee}th{background:#f3f3f3}\
td.l,th.l{text-align:left}.grid{display:flex;flex-wrap:wrap;gap:0 3em}.half{max-width:480px}\
.charts{display:flex;flex-wrap:wrap;gap:12px}.charts svg{border:1px solid #ddd}\
pre{background:#f7f7f7;padding:.8em;white-space:pre-wrap;max-height:24em;overflow:auto}\
.note{color:#666}.warn{color:#a40}svg text{font:11px system-ui,sans-serif;fill:#333}";
