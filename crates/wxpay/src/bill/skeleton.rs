//! The skeleton every bill shares, written once: a column header line, data lines of
//! backtick-prefixed fields, a summary header line and one summary line. A [`Layout`] says what
//! differs between bills (the header names, how a row and the summary are read and written);
//! [`parse`] and [`write`] do the rest.

use time::PrimitiveDateTime;

use super::MilliFen;
use crate::error::DecodeError;
use crate::money::Fen;

pub(crate) const CRLF: &str = "\r\n";

/// What one kind of bill adds to the skeleton.
pub(crate) trait Layout: Sized {
    /// A parsed data line.
    type Row;
    /// The parsed summary line.
    type Summary;

    /// The layout named by the column header's names, or the message for line 1.
    fn from_header(names: &[&str]) -> Result<Self, String>;
    /// How many fields a data line has.
    fn column_count(&self) -> usize;
    /// Reads the fields of data line `line`.
    fn parse_row(&self, fields: &[&str], line: usize) -> Result<Self::Row, DecodeError>;
    /// Whether the summary header's names are this layout's.
    fn is_summary_header(&self, names: &[&str]) -> bool;
    /// The summary header as written (also quoted when another is found).
    fn summary_header_line(&self) -> String;
    /// How many fields the summary line has.
    fn summary_column_count(&self) -> usize;
    /// Reads the fields of the summary line `line`.
    fn parse_summary(&self, fields: &[&str], line: usize) -> Result<Self::Summary, DecodeError>;
}

/// A parsed bill: its layout, rows and summary.
pub(crate) struct Parsed<L: Layout> {
    pub(crate) layout: L,
    pub(crate) rows: Vec<L::Row>,
    pub(crate) summary: L::Summary,
}

/// Parses a bill of layout `L`.
///
/// # Errors
/// [`DecodeError::Bill`] naming the line and the problem.
pub(crate) fn parse<L: Layout>(text: &str) -> Result<Parsed<L>, DecodeError> {
    let lines = split_lines(text)?;
    let (header, rest) = lines
        .split_first()
        .ok_or_else(|| DecodeError::Bill("the bill is empty".into()))?;
    let layout = L::from_header(&split_header(header))
        .map_err(|message| DecodeError::Bill(format!("line 1: {message}")))?;
    let (data, summary_header, tail) = split_body(rest)?;
    let mut rows = Vec::with_capacity(data.len());
    for (i, line) in data.iter().enumerate() {
        let number = i + 2;
        let fields = split_fields(line, layout.column_count(), number)?;
        rows.push(layout.parse_row(&fields, number)?);
    }
    let number = data.len() + 2;
    if !layout.is_summary_header(&split_header(summary_header)) {
        return Err(DecodeError::Bill(format!(
            "line {number}: expected the summary header {:?}",
            layout.summary_header_line()
        )));
    }
    let summary = summary_line(tail, number)?;
    let fields = split_fields(summary, layout.summary_column_count(), number + 1)?;
    let summary = layout.parse_summary(&fields, number + 1)?;
    Ok(Parsed {
        layout,
        rows,
        summary,
    })
}

/// Writes a bill as WeChat serves it: CRLF line ends, every data field prefixed with a
/// backtick.
///
/// # Errors
/// [`DecodeError::Bill`] when a text field holds a line break or the separator `` ,` ``.
pub(crate) fn write(
    header_line: &str,
    rows: impl ExactSizeIterator<Item = Vec<String>>,
    summary_header_line: &str,
    summary: &[String],
) -> Result<String, DecodeError> {
    let count = rows.len();
    let mut out = String::with_capacity(512 + count * 320);
    out.push_str(header_line);
    out.push_str(CRLF);
    for (i, cells) in rows.enumerate() {
        write_fields(&mut out, &cells, i + 2)?;
    }
    out.push_str(summary_header_line);
    out.push_str(CRLF);
    write_fields(&mut out, summary, count + 3)?;
    Ok(out)
}

/// A bill time (`yyyy-MM-dd HH:mm:ss`, Beijing wall time); years outside 0..=9999 have no
/// place in a bill and are written in ISO form.
pub(crate) fn format_time(t: PrimitiveDateTime) -> String {
    crate::time::format_dashed_wall(t)
}

pub(crate) fn parse_time(
    text: &str,
    field: &str,
    line: usize,
) -> Result<PrimitiveDateTime, DecodeError> {
    crate::time::parse_dashed_wall(text).map_err(|_| {
        DecodeError::Bill(format!(
            "line {line}: {field} {text:?} is not a yyyy-MM-dd HH:mm:ss time"
        ))
    })
}

pub(crate) fn parse_fen(text: &str, field: &str, line: usize) -> Result<Fen, DecodeError> {
    Fen::parse_yuan(text).map_err(|e| DecodeError::Bill(format!("line {line}: {field}: {e}")))
}

pub(crate) fn parse_milli_fen(
    text: &str,
    field: &str,
    line: usize,
) -> Result<MilliFen, DecodeError> {
    MilliFen::parse_yuan(text).map_err(|e| DecodeError::Bill(format!("line {line}: {field}: {e}")))
}

pub(crate) fn parse_count(text: &str, field: &str, line: usize) -> Result<u64, DecodeError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DecodeError::Bill(format!(
            "line {line}: {field} {text:?} is not a count"
        )));
    }
    text.parse()
        .map_err(|_| DecodeError::Bill(format!("line {line}: {field} {text:?} is too large")))
}

/// The lines of a bill without their line ends; a BOM and trailing empty lines are dropped.
pub(crate) fn split_lines(text: &str) -> Result<Vec<&str>, DecodeError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    if let Some(i) = lines.iter().position(|l| l.is_empty()) {
        return Err(DecodeError::Bill(format!(
            "line {}: empty line inside the bill",
            i + 1
        )));
    }
    if let Some(i) = lines.iter().position(|l| l.contains('\r')) {
        return Err(DecodeError::Bill(format!(
            "line {}: stray carriage return",
            i + 1
        )));
    }
    Ok(lines)
}

pub(crate) fn split_header(line: &str) -> Vec<&str> {
    line.split(',').map(str::trim).collect()
}

/// Splits the lines after the header into data lines, the summary header and what follows it.
/// Data lines start with a backtick; the summary header is the first line that does not.
pub(crate) fn split_body<'a>(
    rest: &'a [&'a str],
) -> Result<(&'a [&'a str], &'a str, &'a [&'a str]), DecodeError> {
    let at = rest
        .iter()
        .position(|l| !l.starts_with('`'))
        .ok_or_else(|| {
            DecodeError::Bill(format!(
                "line {}: the summary header is missing",
                rest.len() + 2
            ))
        })?;
    Ok((&rest[..at], rest[at], &rest[at + 1..]))
}

/// The one summary line after the summary header at line `header_line`.
pub(crate) fn summary_line<'a>(
    tail: &[&'a str],
    header_line: usize,
) -> Result<&'a str, DecodeError> {
    match tail {
        [summary] => Ok(summary),
        [] => Err(DecodeError::Bill(format!(
            "line {}: the summary line is missing",
            header_line + 1
        ))),
        [_, ..] => Err(DecodeError::Bill(format!(
            "line {}: unexpected content after the summary line",
            header_line + 2
        ))),
    }
}

/// The fields of a data or summary line: each starts with a backtick, and they are separated
/// by `` ,` `` (a plain comma may occur inside a field).
pub(crate) fn split_fields(
    line: &str,
    expected: usize,
    number: usize,
) -> Result<Vec<&str>, DecodeError> {
    let body = line.strip_prefix('`').ok_or_else(|| {
        DecodeError::Bill(format!(
            "line {number}: the first field does not start with a backtick"
        ))
    })?;
    let fields: Vec<&str> = body.split(",`").collect();
    if fields.len() != expected {
        return Err(DecodeError::Bill(format!(
            "line {number}: expected {expected} backtick-prefixed fields, found {}",
            fields.len()
        )));
    }
    Ok(fields)
}

pub(crate) fn write_fields(
    out: &mut String,
    cells: &[String],
    number: usize,
) -> Result<(), DecodeError> {
    for (i, cell) in cells.iter().enumerate() {
        if cell.contains(['\r', '\n']) || cell.contains(",`") {
            return Err(DecodeError::Bill(format!(
                "line {number}: field {} holds a line break or \",`\" and cannot be written",
                i + 1
            )));
        }
        // A trailing comma would merge with the next field's backtick into the separator.
        if i + 1 < cells.len() && cell.ends_with(',') {
            return Err(DecodeError::Bill(format!(
                "line {number}: field {} ends with a comma and cannot be written",
                i + 1
            )));
        }
        if i > 0 {
            out.push(',');
        }
        out.push('`');
        out.push_str(cell);
    }
    out.push_str(CRLF);
    Ok(())
}
