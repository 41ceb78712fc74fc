//! The two standard Type 1 fonts the renderer uses (Helvetica and Helvetica-Bold, which every
//! PDF reader has, so nothing is embedded), text in their WinAnsi encoding, and their glyph
//! widths (the Adobe core-14 AFM metrics), and line wrapping by those widths.

/// A font of the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Font {
    /// Helvetica, for body text and table cells.
    Regular,
    /// Helvetica-Bold, for headings, table headers and totals.
    Bold,
}

impl Font {
    /// The resource name the content streams use for it.
    pub(super) fn resource(self) -> &'static [u8] {
        match self {
            Font::Regular => b"F1",
            Font::Bold => b"F2",
        }
    }

    /// Its PostScript name (a standard font: readers have it built in).
    pub(super) fn base_font(self) -> &'static [u8] {
        match self {
            Font::Regular => b"Helvetica",
            Font::Bold => b"Helvetica-Bold",
        }
    }

    /// The width of the WinAnsi-encoded `text` at `size` points.
    pub(super) fn width(self, text: &[u8], size: f32) -> f32 {
        let table = match self {
            Font::Regular => &HELVETICA,
            Font::Bold => &HELVETICA_BOLD,
        };
        let units: u32 = text
            .iter()
            .map(|&b| {
                b.checked_sub(32)
                    .and_then(|i| table.get(usize::from(i)))
                    .map_or(FALLBACK_WIDTH, |&w| u32::from(w))
            })
            .sum();
        // Exact for any realistic text: a line holds a few hundred glyphs of at most 1015 units.
        #[allow(clippy::cast_precision_loss)]
        let units = units as f32;
        units * size / 1000.0
    }
}

/// Width of a byte the tables do not cover (never emitted by [`encode`]).
const FALLBACK_WIDTH: u32 = 556;

/// What a character with no WinAnsi code is written as.
pub(super) const REPLACEMENT: u8 = b'?';

/// `text` in WinAnsi (Windows-1252), the encoding the fonts are declared with: ASCII and
/// Latin-1 as themselves, the typographic characters of 0x80..=0x9F (€, curly quotes, dashes,
/// bullet, ellipsis, ™, Œ, Š, Ž, …) at their codes, a few look-alikes mapped (minus sign and
/// non-breaking hyphens to `-`, primes to quotes), tabs and other control characters as spaces,
/// and anything else (Greek, Cyrillic, CJK, emoji, …) replaced with `?`. Line feeds are kept:
/// the layout breaks lines there.
pub(super) fn encode(text: &str) -> Vec<u8> {
    text.chars().map(encode_char).collect()
}

fn encode_char(c: char) -> u8 {
    match c {
        '\n' => b'\n',
        ' '..='~' => c as u8,
        '\u{a0}'..='\u{ff}' => u8::try_from(u32::from(c)).unwrap_or(REPLACEMENT),
        c if c.is_control() => b' ',
        c => match WIN_ANSI_HIGH.iter().position(|&h| h == c) {
            Some(i) => 0x80 + u8::try_from(i).unwrap_or(0),
            None => match c {
                '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2212}' => b'-',
                '\u{2032}' | '\u{201b}' => b'\'',
                '\u{2033}' => b'"',
                '\u{2002}'..='\u{200a}' | '\u{202f}' => b' ',
                _ => REPLACEMENT,
            },
        },
    }
}

/// Unicode of WinAnsi 0x80..=0x9F; NUL marks the five undefined codes.
const WIN_ANSI_HIGH: [char; 32] = [
    '\u{20ac}', '\0', '\u{201a}', '\u{0192}', '\u{201e}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{02c6}', '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\0', '\u{017d}', '\0', '\0',
    '\u{2018}', '\u{2019}', '\u{201c}', '\u{201d}', '\u{2022}', '\u{2013}', '\u{2014}', '\u{02dc}',
    '\u{2122}', '\u{0161}', '\u{203a}', '\u{0153}', '\0', '\u{017e}', '\u{0178}',
];

/// Helvetica advance widths (1/1000 em) of WinAnsi 32..=255, from Adobe's core-14 AFM.
#[rustfmt::skip]
const HELVETICA: [u16; 224] = [
    // 32..=63: space ! " # $ % & ' ( ) * + , - . / 0-9 : ; < = > ?
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278,
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556,
    // 64..=95: @ A-Z [ \ ] ^ _
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778,
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556,
    // 96..=127: ` a-z { | } ~ (127 undefined)
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556,
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584, 556,
    // 128..=159
    556, 556, 222, 556, 333, 1000, 556, 556, 333, 1000, 667, 333, 1000, 556, 611, 556,
    556, 222, 222, 333, 333, 350, 556, 1000, 333, 1000, 500, 333, 944, 556, 500, 667,
    // 160..=191
    278, 333, 556, 556, 556, 556, 260, 556, 333, 737, 370, 556, 584, 333, 737, 333,
    400, 584, 333, 333, 333, 556, 537, 278, 333, 333, 365, 556, 834, 834, 834, 611,
    // 192..=223
    667, 667, 667, 667, 667, 667, 1000, 722, 667, 667, 667, 667, 278, 278, 278, 278,
    722, 722, 778, 778, 778, 778, 778, 584, 778, 722, 722, 722, 722, 667, 667, 611,
    // 224..=255
    556, 556, 556, 556, 556, 556, 889, 500, 556, 556, 556, 556, 278, 278, 278, 278,
    556, 556, 556, 556, 556, 556, 556, 584, 611, 556, 556, 556, 556, 500, 556, 500,
];

/// Helvetica-Bold advance widths (1/1000 em) of WinAnsi 32..=255, from Adobe's core-14 AFM.
#[rustfmt::skip]
const HELVETICA_BOLD: [u16; 224] = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278,
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611,
    975, 722, 722, 722, 722, 667, 611, 778, 722, 278, 556, 722, 611, 833, 722, 778,
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 333, 278, 333, 584, 556,
    333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556, 278, 889, 611, 611,
    611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584, 556,
    556, 556, 278, 556, 500, 1000, 556, 556, 333, 1000, 667, 333, 1000, 556, 611, 556,
    556, 278, 278, 500, 500, 350, 556, 1000, 333, 1000, 556, 333, 944, 556, 500, 667,
    278, 333, 556, 556, 556, 556, 280, 556, 333, 737, 370, 556, 584, 333, 737, 333,
    400, 584, 333, 333, 333, 611, 556, 278, 333, 333, 365, 556, 834, 834, 834, 611,
    722, 722, 722, 722, 722, 722, 1000, 722, 667, 667, 667, 667, 278, 278, 278, 278,
    722, 722, 778, 778, 778, 778, 778, 584, 778, 722, 722, 722, 722, 667, 667, 611,
    556, 556, 556, 556, 556, 556, 889, 556, 556, 556, 556, 556, 278, 278, 278, 278,
    611, 611, 611, 611, 611, 611, 611, 584, 611, 611, 611, 611, 611, 556, 611, 556,
];

/// `text` broken into lines no wider than `width`: at line feeds, then between words, and
/// inside a word longer than a line. An empty text is one empty line.
pub(super) fn wrap(text: &[u8], font: Font, size: f32, width: f32) -> Vec<Vec<u8>> {
    let space = font.width(b" ", size);
    let mut lines = Vec::new();
    for hard in text.split(|&b| b == b'\n') {
        let mut line: Vec<u8> = Vec::new();
        let mut line_w = 0.0;
        for word in hard.split(|&b| b == b' ').filter(|w| !w.is_empty()) {
            let word_w = font.width(word, size);
            if !line.is_empty() && line_w + space + word_w <= width {
                line.push(b' ');
                line.extend_from_slice(word);
                line_w += space + word_w;
                continue;
            }
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            if word_w <= width {
                line.extend_from_slice(word);
                line_w = word_w;
                continue;
            }
            // A word wider than the line: as many characters per line as fit (at least one).
            line_w = 0.0;
            for &b in word {
                let w = font.width(&[b], size);
                if !line.is_empty() && line_w + w > width {
                    lines.push(std::mem::take(&mut line));
                    line_w = 0.0;
                }
                line.push(b);
                line_w += w;
            }
        }
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_keeps_every_word_and_each_line_fits() {
        let text = b"the quick brown fox jumps over the lazy dog ".repeat(20);
        let lines = wrap(&text, Font::Regular, 10.0, 200.0);
        assert!(lines.len() > 5, "{}", lines.len());
        assert!(lines.iter().all(|l| Font::Regular.width(l, 10.0) <= 200.0));
        let joined: Vec<u8> = lines.join(&b' ');
        assert_eq!(joined, text.trim_ascii_end());
        let long = wrap(&[b'W'; 100], Font::Bold, 10.0, 50.0);
        assert!(long.len() > 10 && long.iter().all(|l| !l.is_empty()));
        assert_eq!(wrap(b"a\n\nb", Font::Regular, 10.0, 100.0).len(), 3);
    }

    #[test]
    fn text_outside_win_ansi_is_mapped_or_replaced_never_dropped() {
        assert_eq!(encode("Café 10 €"), b"Caf\xe9 10 \x80");
        assert_eq!(encode("“a”—b…"), b"\x93a\x94\x97b\x85");
        assert_eq!(encode("x\u{2212}1\ttab"), b"x-1 tab");
        assert_eq!(encode("Жар 日本 🎉"), b"??? ?? ?");
        assert_eq!(encode("a\nb"), b"a\nb");
    }

    #[test]
    fn widths_follow_the_metrics() {
        // "Hello": H 722 + e 556 + l 222 + l 222 + o 556 = 2278 units.
        assert!((Font::Regular.width(b"Hello", 10.0) - 22.78).abs() < 1e-3);
        assert!(Font::Bold.width(b"Hello", 10.0) > Font::Regular.width(b"Hello", 10.0));
        // Digits share one width, so right-aligned amounts line up.
        assert_eq!(
            Font::Regular.width(b"1111", 9.0),
            Font::Regular.width(b"8888", 9.0)
        );
        assert_eq!(Font::Regular.width(b"\x80", 10.0), 5.56);
    }
}
