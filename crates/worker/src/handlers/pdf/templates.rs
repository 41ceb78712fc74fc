//! The two templates, `invoice` and `report`: their data laid out with the [`Composer`], and
//! the number formats of an invoice.

use super::layout::{self, Align, CONTENT_W, CellText, Column, Composer};
use super::{Cell, InvoiceData, MAX_AMOUNT, MAX_COLUMNS, MAX_ROWS, Party, PdfError, ReportData};

pub(super) fn invoice(c: &mut Composer, title: &str, data: &InvoiceData) -> Result<(), PdfError> {
    if data.items.len() > MAX_ROWS {
        return Err(PdfError::TooManyRows {
            rows: data.items.len(),
            limit: MAX_ROWS,
        });
    }
    let currency = data
        .currency
        .as_deref()
        .map(|c| format!(" {c}"))
        .unwrap_or_default();
    let money = |cents: i64| format!("{}{currency}", format_cents(cents));
    c.heading(title, 20.0)?;
    let mut facts = format!("Invoice number: {}\nDate: {}", data.number, data.date);
    if let Some(due) = &data.due_date {
        facts.push_str(&format!("\nDue: {due}"));
    }
    c.paragraph(&facts)?;
    let block = |label: &str, p: &Party| {
        let mut lines = vec![format!("{label}: {}", p.name)];
        lines.extend(p.address.iter().cloned());
        lines
    };
    c.two_blocks(
        &block("From", &data.seller),
        &block("Bill to", &data.customer),
    )?;
    let widths = [0.5, 0.12, 0.19, 0.19];
    let columns: Vec<Column> = ["Description", "Quantity", "Unit price", "Amount"]
        .iter()
        .zip(widths)
        .enumerate()
        .map(|(i, (h, w))| Column {
            header: (*h).to_owned(),
            width: CONTENT_W * w,
            align: if i == 0 { Align::Left } else { Align::Right },
        })
        .collect();
    let mut subtotal: i64 = 0;
    let mut rows = Vec::with_capacity(data.items.len());
    for (i, item) in data.items.iter().enumerate() {
        let check = |v: f64, what| {
            if v.is_finite() && v.abs() <= MAX_AMOUNT {
                Ok(v)
            } else {
                Err(PdfError::Amount { item: i + 1, what })
            }
        };
        let quantity = check(item.quantity, "quantity")?;
        let unit = check(item.unit_price, "unit price")?;
        let amount = to_cents(check(quantity * unit, "amount")?);
        subtotal = subtotal.saturating_add(amount);
        let number = |text: String| CellText {
            text,
            align: Align::Right,
        };
        rows.push(vec![
            CellText {
                text: item.description.clone(),
                align: Align::Left,
            },
            number(format_quantity(quantity)),
            number(money(to_cents(unit))),
            number(money(amount)),
        ]);
    }
    c.table(&columns, &rows)?;
    let mut totals = vec![("Subtotal".to_owned(), money(subtotal))];
    let mut total = subtotal;
    if let Some(rate) = data.tax_percent.filter(|r| r.is_finite()) {
        // Cents of tax: the subtotal is below 1e16 cents, so the product stays exact enough.
        #[allow(clippy::cast_precision_loss)]
        let tax = to_cents(subtotal as f64 * rate / 10_000.0);
        totals.push((format!("Tax {}%", format_quantity(rate)), money(tax)));
        total = total.saturating_add(tax);
    }
    totals.push(("Total".to_owned(), money(total)));
    c.totals(&totals)?;
    for note in &data.notes {
        c.paragraph(note)?;
    }
    Ok(())
}

pub(super) fn report(c: &mut Composer, title: &str, data: &ReportData) -> Result<(), PdfError> {
    let n = data.columns.len();
    if n == 0 || n > MAX_COLUMNS {
        return Err(PdfError::Columns {
            columns: n,
            limit: MAX_COLUMNS,
        });
    }
    if data.rows.len() > MAX_ROWS {
        return Err(PdfError::TooManyRows {
            rows: data.rows.len(),
            limit: MAX_ROWS,
        });
    }
    if let Some((i, row)) = data.rows.iter().enumerate().find(|(_, r)| r.len() != n) {
        return Err(PdfError::RowWidth {
            row: i + 1,
            cells: row.len(),
            columns: n,
        });
    }
    c.heading(title, 20.0)?;
    for p in &data.paragraphs {
        c.paragraph(p)?;
    }
    let rows: Vec<Vec<CellText>> = data
        .rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| match cell {
                    Cell::Number(n) => CellText {
                        text: n.to_string(),
                        align: Align::Right,
                    },
                    Cell::Text(t) => CellText {
                        text: t.clone(),
                        align: Align::Left,
                    },
                })
                .collect()
        })
        .collect();
    // Each column gets its natural width (widest cell, capped at half the page, at least a
    // small minimum), then all are scaled to fill the text width; long cells wrap.
    let natural: Vec<f32> = (0..n)
        .map(|i| {
            let widest = rows
                .iter()
                .filter_map(|r| r.get(i))
                .map(|cell| layout::cell_width(&cell.text, false))
                .fold(layout::cell_width(&data.columns[i], true), f32::max);
            widest.clamp(30.0, CONTENT_W / 2.0)
        })
        .collect();
    let sum: f32 = natural.iter().sum();
    let columns: Vec<Column> = data
        .columns
        .iter()
        .zip(&natural)
        .enumerate()
        .map(|(i, (header, w))| {
            let numeric = !rows.is_empty()
                && rows
                    .iter()
                    .all(|r| r.get(i).is_some_and(|c| c.align == Align::Right));
            Column {
                header: header.clone(),
                width: w * CONTENT_W / sum,
                align: if numeric { Align::Right } else { Align::Left },
            }
        })
        .collect();
    c.table(&columns, &rows)?;
    for p in &data.conclusion {
        c.paragraph(p)?;
    }
    Ok(())
}

/// `v` (checked finite and at most [`MAX_AMOUNT`]) in cents, rounded half away from zero.
fn to_cents(v: f64) -> i64 {
    // |v| <= 1e12, so |v * 100| <= 1e14 fits an i64 exactly.
    #[allow(clippy::cast_possible_truncation)]
    let cents = (v * 100.0).round() as i64;
    cents
}

/// `cents` as `-1,234.50`.
pub(super) fn format_cents(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    let units = (abs / 100).to_string();
    let mut grouped = String::with_capacity(units.len() + units.len() / 3);
    for (i, digit) in units.chars().enumerate() {
        if i > 0 && (units.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("{sign}{grouped}.{:02}", abs % 100)
}

/// A quantity as written by people: `3`, `2.5`, `0.125` (at most three decimals).
pub(super) fn format_quantity(q: f64) -> String {
    let text = format!("{q:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}
