//! Page layout: a [`Composer`] flows headings, paragraphs and tables down A4 pages (a new page
//! when the current one is full, a table's header repeated on each page it continues on), then
//! writes the pages with `pdf-writer`, each with "Page N of M" in its footer.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use super::PdfError;
use super::fonts::{Font, encode, wrap};

/// A4 width, in points.
const PAGE_W: f32 = 595.0;
/// A4 height, in points.
const PAGE_H: f32 = 842.0;
/// Left and right margin.
const MARGIN_X: f32 = 56.0;
/// Top of the text area.
const TOP: f32 = PAGE_H - 56.0;
/// Bottom of the text area (the footer sits below it).
const BOTTOM: f32 = 64.0;
/// Baseline of the footer.
const FOOTER_Y: f32 = 34.0;
/// Width of the text area.
pub(super) const CONTENT_W: f32 = PAGE_W - 2.0 * MARGIN_X;
/// Body text size.
const BODY: f32 = 10.0;
/// Body line height.
const LEADING: f32 = 14.0;
/// Table text size.
const CELL: f32 = 9.0;
/// Table line height.
const CELL_LEADING: f32 = 11.5;
/// Padding inside a table cell.
const PAD: f32 = 4.0;

/// How a table column's cells are aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Align {
    /// Text.
    Left,
    /// Numbers and amounts.
    Right,
}

/// One column of a table: its header and share of the width.
#[derive(Debug, Clone)]
pub(super) struct Column {
    /// The header text.
    pub header: String,
    /// Its width, in points.
    pub width: f32,
    /// How its header is aligned (like its numbers, or its text).
    pub align: Align,
}

/// One cell: its text and alignment.
#[derive(Debug, Clone)]
pub(super) struct CellText {
    /// The text (wrapped to the column).
    pub text: String,
    /// Left for text, right for numbers.
    pub align: Align,
}

/// A drawing operation on a page.
enum Op {
    Text {
        x: f32,
        y: f32,
        font: Font,
        size: f32,
        text: Vec<u8>,
    },
    Line {
        x1: f32,
        y1: f32,
        x2: f32,
    },
    Shade {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
    },
}

/// The finished document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedPdf {
    /// The PDF file.
    pub bytes: Vec<u8>,
    /// How many pages it has.
    pub pages: usize,
}

/// Lays out content on pages, starting a new page when one is full.
pub(super) struct Composer {
    pages: Vec<Vec<Op>>,
    y: f32,
    max_pages: usize,
}

impl Composer {
    /// An empty document of one page that refuses to grow past `max_pages`.
    pub(super) fn new(max_pages: usize) -> Self {
        Composer {
            pages: vec![Vec::new()],
            y: TOP,
            max_pages,
        }
    }

    fn new_page(&mut self) -> Result<(), PdfError> {
        if self.pages.len() >= self.max_pages {
            return Err(PdfError::TooManyPages {
                limit: self.max_pages,
            });
        }
        self.pages.push(Vec::new());
        self.y = TOP;
        Ok(())
    }

    /// Makes room for `height` points, on a new page if this one has less left.
    fn ensure(&mut self, height: f32) -> Result<bool, PdfError> {
        if self.y - height < BOTTOM && self.y < TOP {
            self.new_page()?;
            return Ok(true);
        }
        Ok(false)
    }

    fn push(&mut self, op: Op) {
        if let Some(page) = self.pages.last_mut() {
            page.push(op);
        }
    }

    fn text(&mut self, x: f32, y: f32, font: Font, size: f32, text: Vec<u8>) {
        self.push(Op::Text {
            x,
            y,
            font,
            size,
            text,
        });
    }

    /// Moves down `height` points (no further than the page's bottom).
    pub(super) fn space(&mut self, height: f32) {
        self.y = (self.y - height).max(BOTTOM);
    }

    /// A bold heading of `size` points, wrapped to the text width.
    pub(super) fn heading(&mut self, text: &str, size: f32) -> Result<(), PdfError> {
        let leading = size * 1.25;
        for line in wrap(&encode(text), Font::Bold, size, CONTENT_W) {
            self.ensure(leading)?;
            self.y -= leading;
            self.text(MARGIN_X, self.y + size * 0.25, Font::Bold, size, line);
        }
        self.space(size * 0.4);
        Ok(())
    }

    /// A paragraph of body text, wrapped, flowing onto further pages; a line feed breaks a line.
    pub(super) fn paragraph(&mut self, text: &str) -> Result<(), PdfError> {
        self.lines(text, Font::Regular)?;
        self.space(LEADING * 0.5);
        Ok(())
    }

    /// Lines of body text in `font`, wrapped, with no space after.
    pub(super) fn lines(&mut self, text: &str, font: Font) -> Result<(), PdfError> {
        for line in wrap(&encode(text), font, BODY, CONTENT_W) {
            self.ensure(LEADING)?;
            self.y -= LEADING;
            self.text(MARGIN_X, self.y + 3.5, font, BODY, line);
        }
        Ok(())
    }

    /// Two blocks of lines side by side (e.g. seller and customer), each with a bold first line.
    pub(super) fn two_blocks(&mut self, left: &[String], right: &[String]) -> Result<(), PdfError> {
        let half = CONTENT_W / 2.0;
        let wrapped = |block: &[String]| -> Vec<(Font, Vec<u8>)> {
            block
                .iter()
                .enumerate()
                .flat_map(|(i, line)| {
                    let font = if i == 0 { Font::Bold } else { Font::Regular };
                    wrap(&encode(line), font, BODY, half - 12.0)
                        .into_iter()
                        .map(move |l| (font, l))
                })
                .collect()
        };
        let (left, right) = (wrapped(left), wrapped(right));
        for i in 0..left.len().max(right.len()) {
            self.ensure(LEADING)?;
            self.y -= LEADING;
            for (x, block) in [(MARGIN_X, &left), (MARGIN_X + half, &right)] {
                if let Some((font, line)) = block.get(i) {
                    self.text(x, self.y + 3.5, *font, BODY, line.clone());
                }
            }
        }
        self.space(LEADING);
        Ok(())
    }

    /// A table: a shaded bold header, then the rows, each cell wrapped to its column; a row that
    /// does not fit goes to the next page, under the header drawn again. A row taller than a
    /// whole page has its cells cut to a page, ending in "...".
    pub(super) fn table(
        &mut self,
        columns: &[Column],
        rows: &[Vec<CellText>],
    ) -> Result<(), PdfError> {
        let header: Vec<Vec<Vec<u8>>> = columns
            .iter()
            .map(|c| wrap(&encode(&c.header), Font::Bold, CELL, c.width - 2.0 * PAD))
            .collect();
        let header_h = row_height(&header);
        let max_lines = ((TOP - BOTTOM - header_h - 2.0 * PAD) / CELL_LEADING)
            .floor()
            .max(1.0);
        // A page holds at most this many lines of one row (a whole number, far below usize::MAX).
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let max_lines = max_lines as usize;
        let first_h = rows
            .first()
            .map_or(0.0, |row| row_height(&cells(columns, row, max_lines)));
        self.ensure(header_h + first_h)?;
        self.table_header(columns, &header, header_h);
        for row in rows {
            let lines = cells(columns, row, max_lines);
            let h = row_height(&lines);
            if self.ensure(h)? {
                self.table_header(columns, &header, header_h);
            }
            let mut x = MARGIN_X;
            for ((column, cell), lines) in columns.iter().zip(row).zip(&lines) {
                for (i, line) in lines.iter().enumerate() {
                    let w = Font::Regular.width(line, CELL);
                    let tx = match cell.align {
                        Align::Left => x + PAD,
                        Align::Right => x + column.width - PAD - w,
                    };
                    let ty = self.y - PAD - CELL_LEADING * (line_index(i) + 1.0) + 2.5;
                    self.text(tx, ty, Font::Regular, CELL, line.clone());
                }
                x += column.width;
            }
            self.y -= h;
            self.push(Op::Line {
                x1: MARGIN_X,
                y1: self.y,
                x2: MARGIN_X + CONTENT_W,
            });
        }
        self.space(LEADING);
        Ok(())
    }

    fn table_header(&mut self, columns: &[Column], header: &[Vec<Vec<u8>>], h: f32) {
        self.push(Op::Shade {
            x: MARGIN_X,
            y: self.y - h,
            w: CONTENT_W,
            h,
        });
        let mut x = MARGIN_X;
        for (column, lines) in columns.iter().zip(header) {
            for (i, line) in lines.iter().enumerate() {
                let ty = self.y - PAD - CELL_LEADING * (line_index(i) + 1.0) + 2.5;
                let tx = match column.align {
                    Align::Left => x + PAD,
                    Align::Right => x + column.width - PAD - Font::Bold.width(line, CELL),
                };
                self.text(tx, ty, Font::Bold, CELL, line.clone());
            }
            x += column.width;
        }
        self.y -= h;
    }

    /// Right-aligned label and value pairs under a table (totals), the last one in bold.
    pub(super) fn totals(&mut self, rows: &[(String, String)]) -> Result<(), PdfError> {
        let right = MARGIN_X + CONTENT_W - PAD;
        for (i, (label, value)) in rows.iter().enumerate() {
            let font = if i + 1 == rows.len() {
                Font::Bold
            } else {
                Font::Regular
            };
            self.ensure(LEADING)?;
            self.y -= LEADING;
            let value = encode(value);
            let label = encode(label);
            let vx = right - font.width(&value, BODY);
            let lx = right - 150.0 - font.width(&label, BODY);
            self.text(lx.max(MARGIN_X), self.y + 3.5, font, BODY, label);
            self.text(vx, self.y + 3.5, font, BODY, value);
        }
        self.space(LEADING);
        Ok(())
    }

    /// The PDF: every page with its footer "Page N of M", the two standard fonts, and `title`
    /// in the document information.
    pub(super) fn finish(self, title: &str) -> RenderedPdf {
        let count = self.pages.len();
        let mut pdf = Pdf::new();
        let catalog = Ref::new(1);
        let tree = Ref::new(2);
        let regular = Ref::new(3);
        let bold = Ref::new(4);
        let info = Ref::new(5);
        let first_page = 6;
        let page_ref = |i: usize| Ref::new(first_page + 2 * i32::try_from(i).unwrap_or(0));
        let content_ref = |i: usize| Ref::new(first_page + 1 + 2 * i32::try_from(i).unwrap_or(0));
        pdf.catalog(catalog).pages(tree);
        pdf.pages(tree)
            .kids((0..count).map(page_ref))
            .count(i32::try_from(count).unwrap_or(i32::MAX));
        for (id, font) in [(regular, Font::Regular), (bold, Font::Bold)] {
            pdf.type1_font(id)
                .base_font(Name(font.base_font()))
                .encoding_predefined(Name(b"WinAnsiEncoding"));
        }
        pdf.document_info(info)
            .title(TextStr(title))
            .producer(TextStr("Offload pdf.render"))
            .finish();
        for (i, ops) in self.pages.into_iter().enumerate() {
            let mut page = pdf.page(page_ref(i));
            page.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H))
                .parent(tree)
                .contents(content_ref(i));
            let mut resources = page.resources();
            let mut fonts = resources.fonts();
            fonts.pair(Name(Font::Regular.resource()), regular);
            fonts.pair(Name(Font::Bold.resource()), bold);
            fonts.finish();
            resources.finish();
            page.finish();
            let footer = format!("Page {} of {count}", i + 1).into_bytes();
            let content = draw(&ops, &footer);
            pdf.stream(content_ref(i), &content);
        }
        RenderedPdf {
            bytes: pdf.finish(),
            pages: count,
        }
    }
}

/// A page's content stream: its operations, then the footer centred at the bottom.
fn draw(ops: &[Op], footer: &[u8]) -> Vec<u8> {
    let mut content = Content::new();
    for op in ops {
        match op {
            Op::Shade { x, y, w, h } => {
                content.save_state();
                content.set_fill_gray(0.9);
                content.rect(*x, *y, *w, *h);
                content.fill_nonzero();
                content.restore_state();
            }
            Op::Line { x1, y1, x2 } => {
                content.set_line_width(0.4);
                content.set_stroke_gray(0.7);
                content.move_to(*x1, *y1);
                content.line_to(*x2, *y1);
                content.stroke();
            }
            Op::Text {
                x,
                y,
                font,
                size,
                text,
            } => {
                show(&mut content, *x, *y, *font, *size, text);
            }
        }
    }
    let w = Font::Regular.width(footer, 8.0);
    show(
        &mut content,
        (PAGE_W - w) / 2.0,
        FOOTER_Y,
        Font::Regular,
        8.0,
        footer,
    );
    content.finish().to_vec()
}

fn show(content: &mut Content, x: f32, y: f32, font: Font, size: f32, text: &[u8]) {
    content.begin_text();
    content.set_font(Name(font.resource()), size);
    content.next_line(x, y);
    content.show(Str(text));
    content.end_text();
}

/// `i` as a float for positioning (line numbers within a row are small).
fn line_index(i: usize) -> f32 {
    u16::try_from(i).map_or(f32::from(u16::MAX), f32::from)
}

/// The cells of `row`, each wrapped to its column and cut to `max_lines` lines.
fn cells(columns: &[Column], row: &[CellText], max_lines: usize) -> Vec<Vec<Vec<u8>>> {
    columns
        .iter()
        .zip(row)
        .map(|(column, cell)| {
            let mut lines = wrap(
                &encode(&cell.text),
                Font::Regular,
                CELL,
                column.width - 2.0 * PAD,
            );
            if lines.len() > max_lines {
                lines.truncate(max_lines);
                if let Some(last) = lines.last_mut() {
                    last.extend_from_slice(b"...");
                }
            }
            lines
        })
        .collect()
}

fn row_height(cells: &[Vec<Vec<u8>>]) -> f32 {
    let lines = cells.iter().map(Vec::len).max().unwrap_or(1).max(1);
    line_index(lines) * CELL_LEADING + 2.0 * PAD
}

/// The natural width of `text` in a table cell (one line, padding included).
pub(super) fn cell_width(text: &str, bold: bool) -> f32 {
    let font = if bold { Font::Bold } else { Font::Regular };
    font.width(&encode(text), CELL) + 2.0 * PAD
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_that_grows_past_its_page_limit_is_refused() {
        let mut composer = Composer::new(2);
        let outcome = (0..200).try_for_each(|_| composer.paragraph("line"));
        assert_eq!(outcome, Err(PdfError::TooManyPages { limit: 2 }));
    }
}
