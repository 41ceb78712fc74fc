//! Photos for the tests of `image.thumbnail`: real JPEGs from the `image` crate, optionally
//! with an EXIF Orientation tag (the segment a phone camera writes).

#![allow(dead_code)]

use image::{ImageEncoder, RgbImage};

/// A photo-like `width`×`height` JPEG: gradients with per-pixel noise, quality 90.
pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let mut state: u32 = 0x9E37_79B9;
    let img = RgbImage::from_fn(width, height, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = u8::try_from(state & 0x3F).unwrap_or(0);
        let gx = u8::try_from(x * 255 / width.max(1)).unwrap_or(255);
        let gy = u8::try_from(y * 255 / height.max(1)).unwrap_or(255);
        image::Rgb([
            gx.wrapping_add(n),
            gy.wrapping_add(n / 2),
            128u8.wrapping_add(n),
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .expect("the test photo encodes");
    out
}

/// `jpeg` with an APP1 Exif segment carrying only `Orientation = value`, right after SOI
/// (6: the camera was turned 90° clockwise, so a viewer rotates the pixels to show it upright).
pub fn with_exif_orientation(jpeg: &[u8], value: u8) -> Vec<u8> {
    let mut exif = b"Exif\0\0".to_vec();
    exif.extend_from_slice(b"MM\0\x2A\0\0\0\x08"); // big-endian TIFF, first IFD at 8
    exif.extend_from_slice(&[0, 1]); // one entry
    exif.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, value, 0, 0]); // SHORT, count 1
    exif.extend_from_slice(&[0, 0, 0, 0]); // no next IFD
    let length = u16::try_from(exif.len() + 2).expect("a short segment");
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&exif);
    out.extend_from_slice(&jpeg[2..]);
    out
}
