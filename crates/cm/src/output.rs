//! Tables for people, JSON for scripts.

use comfy_table::presets::NOTHING;
use comfy_table::{Cell, CellAlignment, Table};
use serde::Serialize;

use crate::client::CliError;

/// Print `value` as pretty JSON.
pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<(), CliError> {
    let s = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Local(format!("cannot encode JSON: {e}")))?;
    println!("{s}");
    Ok(())
}

/// A borderless table with a header; numeric columns are right-aligned.
pub struct Tabular {
    table: Table,
    numeric: Vec<usize>,
}

impl Tabular {
    pub fn new(header: &[&str]) -> Tabular {
        let mut table = Table::new();
        table.load_preset(NOTHING);
        table.set_header(header.iter().map(|h| Cell::new(h.to_uppercase())));
        Tabular {
            table,
            numeric: Vec::new(),
        }
    }

    /// Right-align these columns (0-based).
    pub fn numeric(mut self, cols: &[usize]) -> Tabular {
        self.numeric = cols.to_vec();
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        let row: Vec<Cell> = cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let cell = Cell::new(c);
                if self.numeric.contains(&i) {
                    cell.set_alignment(CellAlignment::Right)
                } else {
                    cell
                }
            })
            .collect();
        self.table.add_row(row);
    }

    pub fn print(self) {
        let text = self.table.to_string();
        for line in text.lines() {
            println!("{}", line.trim_end());
        }
    }
}

/// `key: value` lines for `show` commands.
pub fn fields(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:>width$}: {v}");
    }
}

pub fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|x| x.to_string())
        .unwrap_or_else(|| "-".into())
}
