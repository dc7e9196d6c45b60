//! A report as a table, written as CSV (RFC 4180): a header row, always, then a row per
//! leaf of the answer; fields separated by commas, lines ended by CRLF, a field quoted
//! when it holds a quote (doubled), a comma, CR or LF.
//!
//! A small writer rather than the `csv` crate: every cell is already text or a number,
//! quoting is the whole job, and writing into a `String` cannot fail, so there is no I/O
//! error to carry. The tests read what it writes with the `csv` crate.

use std::fmt::Write as _;

/// How an answer flattens into a table (each report's layout is in `docs/api.md`).
pub trait Table {
    /// The report's name in the download's file name, `<NAME>.csv`.
    const NAME: &'static str;
    /// The header row: each column is named after the JSON field it holds.
    const HEADER: &'static [&'static str];
    /// Pushes every row, its cells in [`Table::HEADER`]'s order.
    fn rows(&self, rows: &mut Rows<'_>);
}

/// One cell of a row.
#[derive(Debug, Clone, Copy)]
pub enum Cell<'a> {
    /// Free text that comes from the events (user ids, campaign ids, countries, ...):
    /// [guarded](guarded) against spreadsheet formulas.
    Text(&'a str),
    /// Text the service writes itself (its own labels, money, instants), as it is.
    Plain(&'a str),
    Int(i64),
    /// A ratio, written as the JSON answer writes it.
    Ratio(f64),
    /// A column this row has no value for.
    Empty,
}

/// Where a [`Table`] pushes its rows.
#[derive(Debug)]
pub struct Rows<'a> {
    out: &'a mut String,
}

impl Rows<'_> {
    pub fn push(&mut self, cells: &[Cell<'_>]) {
        write_row(self.out, cells);
    }
}

/// The table as CSV.
pub fn render<T: Table>(table: &T) -> String {
    let mut out = String::new();
    let header: Vec<Cell<'_>> = T::HEADER.iter().map(|name| Cell::Plain(name)).collect();
    write_row(&mut out, &header);
    table.rows(&mut Rows { out: &mut out });
    out
}

fn write_row(out: &mut String, cells: &[Cell<'_>]) {
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match *cell {
            Cell::Text(text) => field(out, guarded(text), text),
            Cell::Plain(text) => field(out, "", text),
            // Writing to a `String` does not fail.
            Cell::Int(n) => {
                let _ = write!(out, "{n}");
            }
            // Ratios are finite (0 when the denominator is 0); JSON would write anything
            // else as null, which is an empty cell here.
            Cell::Ratio(r) => {
                if let Some(n) = serde_json::Number::from_f64(r) {
                    let _ = write!(out, "{n}");
                }
            }
            Cell::Empty => {}
        }
    }
    out.push_str("\r\n");
}

/// Writes `prefix` and `text` as one field, quoted when RFC 4180 requires it.
fn field(out: &mut String, prefix: &str, text: &str) {
    if text.contains(['"', ',', '\r', '\n']) {
        out.push('"');
        out.push_str(prefix);
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(prefix);
        out.push_str(text);
    }
}

/// The CSV-injection guard: a spreadsheet may run a cell that starts with `=`, `+`, `-` or
/// `@` as a formula, and some skip a leading TAB or CR before one, so text starting with
/// any of them gets a leading `'`, which makes it text. Text that already starts with `'`
/// gets one too, so the guard can be undone exactly: a text cell that starts with `'` had
/// one added.
fn guarded(text: &str) -> &'static str {
    match text.bytes().next() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r' | b'\'') => "'",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[Cell<'_>]) -> String {
        let mut out = String::new();
        write_row(&mut out, cells);
        out
    }

    #[test]
    fn fields_are_quoted_only_when_rfc_4180_needs_it() {
        assert_eq!(row(&[Cell::Text("Berlin"), Cell::Int(3)]), "Berlin,3\r\n");
        assert_eq!(row(&[Cell::Text("a,b")]), "\"a,b\"\r\n");
        assert_eq!(row(&[Cell::Text("say \"hi\"")]), "\"say \"\"hi\"\"\"\r\n");
        assert_eq!(row(&[Cell::Text("two\nlines")]), "\"two\nlines\"\r\n");
        assert_eq!(row(&[Cell::Text("a\r\nb")]), "\"a\r\nb\"\r\n");
        assert_eq!(row(&[Cell::Text("a b ")]), "a b \r\n");
        assert_eq!(row(&[Cell::Plain("x\"y")]), "\"x\"\"y\"\r\n");
        assert_eq!(
            row(&[Cell::Empty, Cell::Text(""), Cell::Empty]),
            ",,\r\n",
            "empty cells stay empty"
        );
    }

    #[test]
    fn text_that_a_spreadsheet_would_run_is_guarded() {
        for (text, want) in [
            ("=1+1", "'=1+1\r\n"),
            ("+49 30", "'+49 30\r\n"),
            ("-2", "'-2\r\n"),
            ("@SUM(A1)", "'@SUM(A1)\r\n"),
            ("\t=1", "'\t=1\r\n"),
            ("\r=1", "\"'\r=1\"\r\n"),
            ("'quoted", "''quoted\r\n"),
            // Guarded and quoted: the `'` goes inside the quotes.
            (
                "=HYPERLINK(\"http://x\",\"y\")",
                "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"\r\n",
            ),
            // Only the first character counts.
            ("a=1", "a=1\r\n"),
            (" =1", " =1\r\n"),
        ] {
            assert_eq!(row(&[Cell::Text(text)]), want, "{text:?}");
        }
    }

    #[test]
    fn numbers_and_the_services_own_text_are_never_guarded() {
        assert_eq!(row(&[Cell::Int(-5)]), "-5\r\n");
        assert_eq!(row(&[Cell::Plain("-0.50")]), "-0.50\r\n");
        assert_eq!(row(&[Cell::Plain("+x")]), "+x\r\n");
    }

    #[test]
    fn ratios_are_written_as_in_json() {
        for r in [0.0, 0.5, 1.0, 1.0 / 3.0, 2.0 / 7.0] {
            let json = serde_json::to_string(&r).unwrap_or_default();
            assert_eq!(row(&[Cell::Ratio(r)]), format!("{json}\r\n"));
        }
        assert_eq!(row(&[Cell::Ratio(f64::NAN)]), "\r\n");
    }

    struct Nothing;

    impl Table for Nothing {
        const NAME: &'static str = "nothing";
        const HEADER: &'static [&'static str] = &["a", "b"];
        fn rows(&self, _: &mut Rows<'_>) {}
    }

    #[test]
    fn the_header_row_is_written_even_without_rows() {
        assert_eq!(render(&Nothing), "a,b\r\n");
    }
}
