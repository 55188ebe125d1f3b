//! How the client subcommands print: tables that fit the terminal, colour
//! only on a terminal without `NO_COLOR`, and short human times.

use std::io::IsTerminal;

use serde_json::Value;

/// Whether stdout gets colours: a terminal, and `NO_COLOR` unset or empty
/// (<https://no-color.org>).
pub(crate) fn colours() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The terminal's width in columns, or `None` when stdout is not a terminal
/// (then nothing is cut: a pipe gets whole lines).
pub(crate) fn width() -> Option<usize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    console::Term::stdout().size_checked().map(|(_, cols)| usize::from(cols)).filter(|&c| c > 0)
}

/// A status word, coloured when `colour` is on.
pub(crate) fn status(word: &str, colour: bool) -> String {
    let styled = console::style(word).force_styling(colour);
    match word {
        "completed" => styled.green(),
        "failed" => styled.red(),
        "cancelled" => styled.yellow(),
        "running" => styled.cyan(),
        "waiting" => styled.magenta(),
        _ => styled,
    }
    .to_string()
}

/// How a column gives way when a table is wider than the terminal.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fit {
    /// Never cut or left out (an id, a status).
    Keep,
    /// Cut with `…`, down to its header's width (a message, a name).
    Cut,
    /// Left out when cutting is not enough (a figure one can do without).
    Drop,
}

/// A table: a header and rows of cells, printed with each column as wide as
/// its widest cell. When the lines would pass the terminal's width, the
/// [`Fit::Cut`] columns are cut from the right, then the [`Fit::Drop`]
/// columns left out from the right.
pub(crate) struct Table {
    header: Vec<(&'static str, Fit)>,
    rows: Vec<Vec<Cell>>,
}

/// A cell: the text measured, and how it is shown (the same text, maybe coloured).
pub(crate) struct Cell {
    text: String,
    shown: Option<String>,
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell { text, shown: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Cell { text: text.to_owned(), shown: None }
    }
}

impl Cell {
    /// A cell shown styled: `text` is measured, `shown` is printed.
    pub(crate) fn styled(text: &str, shown: String) -> Self {
        Cell { text: text.to_owned(), shown: Some(shown) }
    }
}

impl Table {
    /// A table with these columns.
    pub(crate) fn new(header: Vec<(&'static str, Fit)>) -> Self {
        Table { header, rows: Vec::new() }
    }

    /// Adds a row (as many cells as columns).
    pub(crate) fn row(&mut self, cells: Vec<Cell>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(cells);
    }

    /// The lines, fitted to `width` when given.
    pub(crate) fn render(&self, width: Option<usize>) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|(h, _)| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.text.chars().count());
            }
        }
        let mut shown = vec![true; columns];
        if let Some(limit) = width {
            let total = |w: &[usize], shown: &[bool]| {
                let visible: Vec<usize> = w.iter().zip(shown).filter(|(_, s)| **s).map(|(w, _)| *w).collect();
                visible.iter().sum::<usize>() + 2 * visible.len().saturating_sub(1)
            };
            for i in (0..columns).rev().filter(|&i| self.header[i].1 == Fit::Cut) {
                let over = total(&widths, &shown).saturating_sub(limit);
                let floor = self.header[i].0.chars().count();
                widths[i] = widths[i].saturating_sub(over).max(floor);
            }
            for i in (0..columns).rev().filter(|&i| self.header[i].1 == Fit::Drop) {
                if total(&widths, &shown) > limit {
                    shown[i] = false;
                }
            }
        }
        let mut out = String::new();
        let header: Vec<Cell> = self.header.iter().map(|&(h, _)| Cell::from(h)).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut cells = Vec::new();
            for (i, cell) in row.iter().enumerate().filter(|(i, _)| shown[*i]) {
                let len = cell.text.chars().count();
                cells.push(if len > widths[i] {
                    let cut: String = cell.text.chars().take(widths[i].saturating_sub(1)).collect();
                    format!("{cut}…")
                } else {
                    format!("{}{}", cell.shown.as_deref().unwrap_or(&cell.text), " ".repeat(widths[i] - len))
                });
            }
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

/// A field of a JSON object as text (`-` when absent or null).
pub(crate) fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// How long ago an RFC 3339 time was, in a few characters (`4s`, `12m`, `3h`, `2d`).
pub(crate) fn age(rfc3339: Option<&str>) -> String {
    let Some(at) = rfc3339.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else {
        return "-".to_owned();
    };
    let seconds = (chrono::Utc::now() - at.with_timezone(&chrono::Utc)).num_seconds().max(0);
    short_duration(seconds as u64)
}

/// Seconds in a few characters.
pub(crate) fn short_duration(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The time between two RFC 3339 stamps, as `1.2s` or `3m04s`.
pub(crate) fn elapsed(from: Option<&str>, to: Option<&str>) -> Option<String> {
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    let (from, to) = (parse(from?)?, parse(to?)?);
    let ms = (to - from).num_milliseconds().max(0) as u64;
    Some(if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_cuts_then_drops_columns_to_fit_and_keeps_the_rest_whole() {
        let mut table = Table::new(vec![("ID", Fit::Keep), ("AGE", Fit::Drop), ("MESSAGE", Fit::Cut)]);
        table.row(vec!["01K0000000".into(), "12m".into(), "a long message that does not fit".into()]);
        let lines = table.render(Some(30));
        for line in lines.lines() {
            assert!(line.chars().count() <= 30, "{line:?} is over 30 columns");
        }
        assert!(lines.contains("01K0000000  12m  a long messa…"), "{lines}");
        // Narrower: the message is at its header's width, so AGE goes.
        let narrow = table.render(Some(20));
        assert!(narrow.lines().all(|l| l.chars().count() <= 20) && !narrow.contains("12m"), "{narrow}");
        assert_eq!(narrow.lines().next(), Some("ID          MESSAGE"), "{narrow}");
        assert!(narrow.contains("01K0000000  a long…"), "{narrow}");
        let whole = table.render(None);
        assert!(whole.contains("a long message that does not fit") && whole.contains("12m"), "{whole}");
    }

    #[test]
    fn short_durations_pick_one_unit() {
        assert_eq!(short_duration(59), "59s");
        assert_eq!(short_duration(61), "1m");
        assert_eq!(short_duration(7200), "2h");
        assert_eq!(short_duration(200_000), "2d");
        assert_eq!(elapsed(Some("2026-01-01T00:00:00Z"), Some("2026-01-01T00:01:04.5Z")).unwrap(), "1m04s");
    }
}
