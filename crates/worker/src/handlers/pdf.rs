//! The built-in kind `pdf.render` (queue `documents`): a PDF from a built-in template
//! (`invoice` or `report`) and the caller's JSON data, attached as `document.pdf`.
//!
//! The PDF is written with [`pdf-writer`](https://crates.io/crates/pdf-writer), the Typst
//! team's low-level PDF writer: maintained, MIT/Apache-2.0, and small (its only dependencies,
//! `bitflags`, `itoa`, `memchr` and `ryu`, were already in the build). Layout (flowing
//! text and tables over pages, page numbers) is ours, in the private modules `layout` and
//! `templates`; the text uses the standard fonts Helvetica and Helvetica-Bold, which every
//! reader has built in, so no font file is shipped or embedded.
//!
//! Text is written in the WinAnsi (Windows-1252) encoding of those fonts: ASCII, Latin-1
//! (é, ü, ß, …) and the typographic characters (€ “ ” ‘ ’ – — • … ™) are shown as they are;
//! any other character (Greek, Cyrillic, CJK, emoji, …) is shown as `?`. It never fails a job.
//!
//! Bounds: at most [`MAX_PAGES`] pages (a longer document fails permanently, saying so), and the
//! payload schema caps rows, columns, paragraphs and text lengths, so the API refuses an
//! oversized request with a 422 before it is queued.

mod fonts;
mod layout;
mod templates;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use layout::Composer;
pub use layout::RenderedPdf;

use crate::{Artifact, Job, JobContext, JobError};

/// Longest document, in pages.
pub const MAX_PAGES: usize = 500;
/// Most table rows (invoice line items or report rows).
pub const MAX_ROWS: usize = 10_000;
/// Most report columns.
pub const MAX_COLUMNS: usize = 12;
/// Largest absolute amount, quantity or unit price on an invoice.
pub const MAX_AMOUNT: f64 = 1e12;

/// Payload of `pdf.render`: the template and its data.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(tag = "template", rename_all = "lowercase", deny_unknown_fields)]
pub enum PdfPayload {
    /// An invoice: seller, customer, number, date, line items and totals.
    Invoice {
        /// The heading of the first page (default `Invoice <number>`).
        #[serde(default)]
        #[schemars(length(max = 200))]
        title: Option<String>,
        /// The invoice.
        data: InvoiceData,
    },
    /// A report: paragraphs and a table of the caller's columns and rows.
    Report {
        /// The heading of the first page (default `Report`).
        #[serde(default)]
        #[schemars(length(max = 200))]
        title: Option<String>,
        /// The report.
        data: ReportData,
    },
}

/// The data of an `invoice`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceData {
    /// Who issues the invoice.
    pub seller: Party,
    /// Who is billed.
    pub customer: Party,
    /// The invoice number, e.g. `2024-0042`.
    #[schemars(length(min = 1, max = 100))]
    pub number: String,
    /// The invoice date as it should be printed, e.g. `2024-05-31`.
    #[schemars(length(max = 100))]
    pub date: String,
    /// When payment is due, as it should be printed.
    #[serde(default)]
    #[schemars(length(max = 100))]
    pub due_date: Option<String>,
    /// Printed after every amount, e.g. `EUR`.
    #[serde(default)]
    #[schemars(length(max = 10))]
    pub currency: Option<String>,
    /// The line items, in order.
    #[schemars(length(min = 1, max = 10_000))]
    pub items: Vec<LineItem>,
    /// Tax on the subtotal, in percent (e.g. `19` for 19 %); no tax line when absent.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub tax_percent: Option<f64>,
    /// Paragraphs printed after the totals (payment terms, thanks).
    #[serde(default)]
    #[schemars(length(max = 100), inner(length(max = 10_000)))]
    pub notes: Vec<String>,
}

/// A seller or customer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Party {
    /// The name, printed in bold.
    #[schemars(length(min = 1, max = 200))]
    pub name: String,
    /// Address lines, one per line.
    #[serde(default)]
    #[schemars(length(max = 10), inner(length(max = 200)))]
    pub address: Vec<String>,
}

/// One line of an invoice; its amount is quantity × unit price, rounded to cents.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LineItem {
    /// What was sold.
    #[schemars(length(max = 1_000))]
    pub description: String,
    /// How many.
    #[schemars(range(min = -1e12, max = 1e12))]
    pub quantity: f64,
    /// The price of one.
    #[schemars(range(min = -1e12, max = 1e12))]
    pub unit_price: f64,
}

/// The data of a `report`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportData {
    /// Paragraphs before the table; a line feed breaks a line.
    #[serde(default)]
    #[schemars(length(max = 1_000), inner(length(max = 10_000)))]
    pub paragraphs: Vec<String>,
    /// The table's column headers.
    #[schemars(length(min = 1, max = 12), inner(length(max = 200)))]
    pub columns: Vec<String>,
    /// The table's rows, each with one cell per column: text (left-aligned) or a number
    /// (right-aligned, printed as written).
    #[serde(default)]
    #[schemars(length(max = 10_000), inner(length(max = 12)))]
    pub rows: Vec<Vec<Cell>>,
    /// Paragraphs after the table.
    #[serde(default)]
    #[schemars(length(max = 1_000), inner(length(max = 10_000)))]
    pub conclusion: Vec<String>,
}

/// A report table cell.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Cell {
    /// A number, right-aligned.
    Number(serde_json::Number),
    /// Text, left-aligned.
    Text(#[schemars(length(max = 1_000))] String),
}

/// Why a document cannot be rendered; every case is the input's fault (permanent).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PdfError {
    /// The document would have more pages than allowed.
    #[error("the document would have more than {limit} pages; split it into smaller documents")]
    TooManyPages {
        /// The page limit.
        limit: usize,
    },
    /// A table with more rows than allowed.
    #[error("the table has {rows} rows, at most {limit} are allowed")]
    TooManyRows {
        /// Rows given.
        rows: usize,
        /// The limit.
        limit: usize,
    },
    /// A report with no columns or more than allowed.
    #[error("a report needs 1 to {limit} columns, {columns} were given")]
    Columns {
        /// Columns given.
        columns: usize,
        /// The limit.
        limit: usize,
    },
    /// A report row whose cell count is not the column count.
    #[error("row {row} has {cells} cells but the report has {columns} columns")]
    RowWidth {
        /// The row, counted from 1.
        row: usize,
        /// Its cells.
        cells: usize,
        /// The columns.
        columns: usize,
    },
    /// An invoice number out of range (quantity, unit price or amount).
    #[error("line item {item}: {what} is out of range (at most {MAX_AMOUNT:e} in absolute value)")]
    Amount {
        /// The line item, counted from 1.
        item: usize,
        /// Which number.
        what: &'static str,
    },
}

/// Renders `doc` to PDF: pure and synchronous (CPU-bound; the job runs it on a blocking
/// thread).
///
/// ```
/// let pdf = offload_worker::handlers::pdf::render(
///     &offload_worker::handlers::pdf::sample_three_page_report(),
/// )
/// .unwrap();
/// assert_eq!(pdf.pages, 3);
/// assert!(pdf.bytes.starts_with(b"%PDF-"));
/// ```
pub fn render(doc: &PdfPayload) -> Result<RenderedPdf, PdfError> {
    let mut composer = Composer::new(MAX_PAGES);
    let title = match doc {
        PdfPayload::Invoice { title, data } => {
            let title = title
                .clone()
                .unwrap_or_else(|| format!("Invoice {}", data.number));
            templates::invoice(&mut composer, &title, data)?;
            title
        }
        PdfPayload::Report { title, data } => {
            let title = title.clone().unwrap_or_else(|| "Report".to_owned());
            templates::report(&mut composer, &title, data)?;
            title
        }
    };
    Ok(composer.finish(&title))
}

impl PdfPayload {
    /// The template's name: `invoice` or `report`.
    pub fn template(&self) -> &'static str {
        match self {
            PdfPayload::Invoice { .. } => "invoice",
            PdfPayload::Report { .. } => "report",
        }
    }
}

/// A report that renders to exactly three pages: a title, paragraphs, and a table of 80
/// rows that flows over pages two and three (its header repeated). The benchmark renders it.
pub fn sample_three_page_report() -> PdfPayload {
    let paragraph = "Jobs are published as persistent messages to durable queues; workers \
                     consume them with fair dispatch and acknowledge each one only once it has \
                     finished, so a worker that dies leaves its jobs to be delivered again.";
    let rows = (1..=80)
        .map(|i| {
            vec![
                Cell::Text(format!("worker-{i:03}")),
                Cell::Text(if i % 3 == 0 { "documents" } else { "default" }.to_owned()),
                Cell::Number(serde_json::Number::from(i * 37)),
                Cell::Number(serde_json::Number::from(i % 7)),
            ]
        })
        .collect();
    PdfPayload::Report {
        title: Some("Weekly throughput".to_owned()),
        data: ReportData {
            paragraphs: vec![paragraph.to_owned(); 6],
            columns: ["Worker", "Queue", "Jobs", "Retries"]
                .map(str::to_owned)
                .to_vec(),
            rows,
            conclusion: vec!["End of report.".to_owned()],
        },
    }
}

/// What `pdf.render` returns beside its artifact `document.pdf`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PdfRendered {
    /// Pages in the document.
    pub pages: usize,
    /// Size of `document.pdf`, in bytes.
    pub bytes: usize,
    /// The template used.
    pub template: &'static str,
}

/// The built-in kind `pdf.render` on the queue `documents`: renders [`PdfPayload`] with
/// [`render`] on a blocking thread and attaches `document.pdf` (`application/pdf`).
///
/// ```
/// let worker = offload_worker::Worker::builder(offload_worker::Settings::from_env().unwrap())
///     .job(offload_worker::handlers::pdf::PdfRender);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct PdfRender;

impl Job for PdfRender {
    const KIND: &'static str = "pdf.render";
    type Payload = PdfPayload;
    type Output = PdfRendered;

    fn queue(&self) -> &str {
        "documents"
    }

    async fn run(&self, ctx: JobContext, doc: PdfPayload) -> Result<PdfRendered, JobError> {
        let template = doc.template();
        let pdf = tokio::task::spawn_blocking(move || render(&doc))
            .await?
            .map_err(JobError::permanent)?;
        let rendered = PdfRendered {
            pages: pdf.pages,
            bytes: pdf.bytes.len(),
            template,
        };
        ctx.attach(Artifact::new("document.pdf", "application/pdf", pdf.bytes));
        Ok(rendered)
    }
}

#[cfg(test)]
mod tests;
