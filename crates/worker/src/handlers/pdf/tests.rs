//! `pdf.render` checked with a real PDF reader: poppler's `pdftotext` and `pdfinfo`.

use std::{process::Command, time::Duration};

use serde_json::{Value, json};

use super::templates::{format_cents, format_quantity};
use super::*;
use crate::handlers::{Handler, builtin};
use offload_shared::kinds::JobKind;

/// Runs poppler's `tool` on `pdf` with `args` before the file name; fails naming the package
/// when the tool is missing.
fn poppler(tool: &str, args: &[&str], pdf: &[u8]) -> String {
    let path = std::env::temp_dir().join(format!("offload-pdf-{}.pdf", uuid::Uuid::now_v7()));
    std::fs::write(&path, pdf).expect("temporary PDF written");
    let output = Command::new(tool).args(args).arg(&path).arg("-").output();
    let _ = std::fs::remove_file(&path);
    let output = output.unwrap_or_else(|e| {
        panic!("cannot run {tool} ({e}): install it with `apt-get install poppler-utils`")
    });
    assert!(
        output.status.success(),
        "{tool} refused the PDF: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn text(pdf: &[u8]) -> String {
    poppler("pdftotext", &["-layout"], pdf)
}

fn page_text(pdf: &[u8], page: usize) -> String {
    let page = page.to_string();
    poppler("pdftotext", &["-layout", "-f", &page, "-l", &page], pdf)
}

/// `pdfinfo`'s page count (`pdfinfo` takes no output argument, so it gets none).
fn pdfinfo_pages(pdf: &[u8]) -> usize {
    let path = std::env::temp_dir().join(format!("offload-pdf-{}.pdf", uuid::Uuid::now_v7()));
    std::fs::write(&path, pdf).expect("temporary PDF written");
    let output = Command::new("pdfinfo").arg(&path).output();
    let _ = std::fs::remove_file(&path);
    let output = output.unwrap_or_else(|e| {
        panic!("cannot run pdfinfo ({e}): install it with `apt-get install poppler-utils`")
    });
    assert!(output.status.success(), "pdfinfo refused the PDF");
    let info = String::from_utf8_lossy(&output.stdout).into_owned();
    info.lines()
        .find_map(|l| l.strip_prefix("Pages:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no page count in pdfinfo's output: {info}"))
}

fn invoice_json(items: usize) -> Value {
    let items: Vec<Value> = (0..items)
        .map(|i| {
            json!({"description": format!("Consulting day {}", i + 1), "quantity": 2, "unit_price": 612.5})
        })
        .collect();
    json!({
        "template": "invoice",
        "data": {
            "seller": {"name": "Offload GmbH", "address": ["Hauptstraße 1", "10115 Berlin"]},
            "customer": {"name": "ACME Widgets Ltd", "address": ["1 Road Runner Way"]},
            "number": "2024-0042",
            "date": "2024-05-31",
            "currency": "EUR",
            "items": items,
            "tax_percent": 19,
            "notes": ["Payable within 30 days. Thank you for your business!"]
        }
    })
}

fn payload(value: Value) -> PdfPayload {
    serde_json::from_value(value).expect("a valid payload")
}

#[test]
fn an_invoice_shows_the_parties_items_and_totals() {
    let pdf = render(&payload(invoice_json(3))).expect("rendered");
    assert_eq!(pdf.pages, 1);
    assert_eq!(pdfinfo_pages(&pdf.bytes), 1);
    let text = text(&pdf.bytes);
    for expected in [
        "Invoice 2024-0042",
        "ACME Widgets Ltd",
        "Offload GmbH",
        "Hauptstraße 1",
        "Consulting day 3",
        "612.50 EUR",
        "1,225.00 EUR",
        "Subtotal",
        "3,675.00 EUR",
        "Tax 19%",
        "698.25 EUR",
        "4,373.25 EUR",
        "Payable within 30 days",
        "Page 1 of 1",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
}

#[test]
fn the_sample_report_has_three_pages_each_numbered_and_the_header_repeated() {
    let pdf = render(&sample_three_page_report()).expect("rendered");
    assert_eq!(pdf.pages, 3);
    assert_eq!(pdfinfo_pages(&pdf.bytes), 3);
    let all = text(&pdf.bytes);
    assert!(all.contains("Weekly throughput"), "{all}");
    assert!(all.contains("worker-080") && all.contains("2960"), "{all}");
    for page in 1..=3 {
        let text = page_text(&pdf.bytes, page);
        assert!(
            text.contains(&format!("Page {page} of 3")),
            "page {page}:\n{text}"
        );
    }
    // The table continues on page 3 under its header drawn again.
    let last = page_text(&pdf.bytes, 3);
    assert!(
        last.contains("Worker") && last.contains("Retries"),
        "{last}"
    );
    assert!(last.contains("End of report."), "{last}");
}

#[test]
fn a_long_invoice_flows_onto_further_pages_with_its_table_header() {
    let pdf = render(&payload(invoice_json(120))).expect("rendered");
    assert!(pdf.pages >= 3, "{} pages", pdf.pages);
    assert_eq!(pdfinfo_pages(&pdf.bytes), pdf.pages);
    let last = page_text(&pdf.bytes, pdf.pages);
    assert!(last.contains("Unit price"), "{last}");
    assert!(last.contains("Consulting day 120"), "{last}");
    assert!(
        last.contains(&format!("Page {0} of {0}", pdf.pages)),
        "{last}"
    );
    // 120 × 1,225.00 = 147,000.00; tax 27,930.00; total 174,930.00.
    assert!(last.contains("174,930.00 EUR"), "{last}");
}

#[test]
fn text_outside_the_font_encoding_is_replaced_not_a_crash() {
    let doc = payload(json!({
        "template": "report",
        "title": "Ünïcödé – “quoted” €5 Жар 日本 🎉",
        "data": {"paragraphs": ["Grüße aus Köln…", "tab\there"], "columns": ["名前", "n"],
                 "rows": [["Zoë", 1.5], ["🎉", -2]]}
    }));
    let pdf = render(&doc).expect("rendered");
    let text = text(&pdf.bytes);
    for expected in [
        "Ünïcödé – “quoted” €5 ??? ?? ?",
        "Grüße aus Köln…",
        "Zoë",
        "1.5",
        "-2",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
}

#[test]
fn documents_beyond_the_bounds_are_refused_saying_why() {
    let huge = "word ".repeat(2_000);
    let too_long = PdfPayload::Report {
        title: None,
        data: ReportData {
            paragraphs: vec![huge; 1_000],
            columns: vec!["a".to_owned()],
            rows: vec![],
            conclusion: vec![],
        },
    };
    let cases: Vec<(PdfPayload, &str)> = vec![
        (too_long, "more than 500 pages"),
        (
            payload(
                json!({"template": "report", "data": {"columns": ["a", "b"], "rows": [["x"]]}}),
            ),
            "row 1 has 1 cells but the report has 2 columns",
        ),
        (
            payload(json!({"template": "report", "data": {"columns": []}})),
            "1 to 12 columns",
        ),
        (
            {
                let mut v = invoice_json(1);
                v["data"]["items"][0]["quantity"] = json!(1e12);
                v["data"]["items"][0]["unit_price"] = json!(1e12);
                payload(v)
            },
            "line item 1: amount is out of range",
        ),
    ];
    for (doc, why) in cases {
        let e = render(&doc).expect_err(why);
        assert!(e.to_string().contains(why), "{why}: {e}");
    }
}

#[tokio::test]
async fn the_job_attaches_document_pdf_and_returns_its_size() {
    let handler = builtin::registry()
        .get(&JobKind::parse("pdf.render").expect("valid"))
        .expect("registered");
    let ctx = JobContext::standalone("pdf.render", Duration::from_secs(30));
    let result = Handler::run(handler.as_ref(), ctx.clone(), invoice_json(2))
        .await
        .expect("rendered");
    let attached = ctx.attached();
    assert_eq!(attached.len(), 1);
    assert_eq!(attached[0].name, "document.pdf");
    assert_eq!(attached[0].content_type, "application/pdf");
    assert_eq!(
        result,
        json!({"pages": 1, "bytes": attached[0].bytes.len(), "template": "invoice"})
    );
    assert!(text(&attached[0].bytes).contains("ACME Widgets Ltd"));
    let refused = Handler::run(
        handler.as_ref(),
        JobContext::standalone("pdf.render", Duration::from_secs(30)),
        json!({"template": "report", "data": {"columns": ["a"], "rows": [["x", "y"]]}}),
    )
    .await;
    assert!(
        matches!(&refused, Err(JobError::Permanent(m)) if m.contains("row 1 has 2 cells")),
        "{refused:?}"
    );
}

#[test]
fn the_schema_documents_each_template_and_refuses_what_the_handler_refuses() {
    let spec = builtin::specs()
        .into_iter()
        .find(|s| s.name.as_str() == "pdf.render")
        .expect("pdf.render is built in");
    assert_eq!(spec.queue.as_str(), "documents");
    let schema = spec.compile().expect("valid schema");
    let report = json!({"template": "report", "title": "T", "data": {"columns": ["a"], "rows": [["x"], [1]]}});
    for good in [invoice_json(1), report.clone()] {
        assert!(schema.check(&good).is_ok(), "{good}");
    }
    let mut unknown_field = invoice_json(1);
    unknown_field["data"]["discount"] = json!(5);
    let mut no_customer = invoice_json(1);
    no_customer["data"]
        .as_object_mut()
        .expect("object")
        .remove("customer");
    let mut too_many_rows = report.clone();
    too_many_rows["data"]["rows"] = json!(vec![json!(["x"]); MAX_ROWS + 1]);
    for (bad, why) in [
        (
            json!({"template": "letter", "data": {}}),
            "unknown template",
        ),
        (json!({"data": {"columns": ["a"]}}), "no template"),
        (json!({"template": "report"}), "no data"),
        (unknown_field, "unknown field in data"),
        (no_customer, "no customer"),
        (
            json!({"template": "report", "data": {"columns": ["a"]}, "x": 1}),
            "unknown top-level field",
        ),
        (
            json!({"template": "report", "data": {"columns": ["a"], "rows": [[{"a": 1}]]}}),
            "object cell",
        ),
        (too_many_rows, "too many rows"),
    ] {
        assert!(schema.check(&bad).is_err(), "{why}: {bad}");
        assert!(
            serde_json::from_value::<PdfPayload>(bad.clone()).is_err() || why == "too many rows",
            "{why}: {bad}"
        );
    }
}

#[test]
fn amounts_and_quantities_are_printed_as_people_write_them() {
    assert_eq!(format_cents(0), "0.00");
    assert_eq!(format_cents(-123_456_789), "-1,234,567.89");
    assert_eq!(format_cents(100_000), "1,000.00");
    assert_eq!(format_quantity(3.0), "3");
    assert_eq!(format_quantity(2.5), "2.5");
    assert_eq!(format_quantity(0.125), "0.125");
}

/// Writes the sample documents to `target/pdf-samples/` to look at:
/// `cargo test -p offload-worker write_samples -- --ignored`.
#[test]
#[ignore = "writes files for a person to look at"]
fn write_samples() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pdf-samples");
    std::fs::create_dir_all(&dir).expect("directory");
    for (name, doc) in [
        ("invoice.pdf", payload(invoice_json(40))),
        ("report.pdf", sample_three_page_report()),
    ] {
        let pdf = render(&doc).expect("rendered");
        std::fs::write(dir.join(name), pdf.bytes).expect("written");
    }
}

#[test]
fn the_readme_examples_fit_the_schema_and_render() {
    let readme = include_str!("../../../../../README.md");
    let section = readme
        .split("### pdf.render")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a pdf.render section");
    let submit = section
        .split("-d '")
        .nth(1)
        .and_then(|s| s.split("}'").next())
        .map(|s| format!("{s}}}"))
        .expect("a curl submit");
    let submit: Value = serde_json::from_str(&submit).expect("the curl body is JSON");
    let form = section
        .split("```json")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a browser payload");
    let form: Value = serde_json::from_str(form).expect("the form payload is JSON");
    let schema = builtin::specs()
        .into_iter()
        .find(|s| s.name.as_str() == "pdf.render")
        .expect("built in")
        .compile()
        .expect("valid");
    for (what, example) in [("curl", submit["payload"].clone()), ("form", form)] {
        assert!(schema.check(&example).is_ok(), "{what}: {example}");
        let pdf = render(&payload(example)).expect(what);
        assert_eq!(pdf.pages, 1, "{what}");
    }
}
