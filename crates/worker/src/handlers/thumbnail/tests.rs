//! Unit tests of `image.thumbnail`: the pipeline's sizes, formats, orientation and refusals,
//! and the handler's sources and schema.

use std::time::{Duration, Instant};

use image::{ImageEncoder, RgbImage};
use serde_json::{Value, json};

use super::*;
use crate::InputFile;
use crate::handlers::{Handler, Registry};
use offload_shared::kinds::JobKind;

/// A photo-like image: gradients with per-pixel noise (so encoders cannot shortcut it).
fn noisy(width: u32, height: u32) -> RgbImage {
    let mut state: u32 = 0x9E37_79B9;
    RgbImage::from_fn(width, height, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state & 0x3F) as u8;
        let gx = (x * 255 / width.max(1)) as u8;
        let gy = (y * 255 / height.max(1)) as u8;
        image::Rgb([
            gx.wrapping_add(n),
            gy.wrapping_add(n / 2),
            128u8.wrapping_add(n),
        ])
    })
}

fn jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .expect("encodes");
    out
}

fn encoded(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut Cursor::new(&mut out), format)
        .expect("encodes");
    out
}

fn opts(width: u32, height: u32, fit: Fit, format: OutputFormat) -> ThumbnailOptions {
    ThumbnailOptions {
        fit,
        format,
        ..ThumbnailOptions::new(width, height)
    }
}

/// The thumbnail decoded again, with the format its bytes really are.
fn reread(thumb: &Thumbnail) -> (ImageFormat, u32, u32) {
    let format = image::guess_format(&thumb.bytes).expect("a known format");
    let img = image::load_from_memory(&thumb.bytes).expect("decodes");
    (format, img.width(), img.height())
}

#[test]
fn a_12_megapixel_photo_fits_both_ways_with_exact_sizes() {
    let photo = jpeg(&noisy(4000, 3000), 90);
    let cases = [(Fit::Contain, (256, 192)), (Fit::Cover, (256, 256))];
    for (fit, size) in cases {
        let thumb = make_thumbnail(
            &photo,
            &opts(256, 256, fit, OutputFormat::Webp),
            DEFAULT_MAX_PIXELS,
        )
        .expect("a 12 MP photo passes the default limit");
        assert_eq!((thumb.width, thumb.height), size, "{fit:?}");
        assert_eq!(
            reread(&thumb),
            (ImageFormat::WebP, size.0, size.1),
            "{fit:?}"
        );
        assert_eq!(
            thumb.source,
            SourceInfo {
                width: 4000,
                height: 3000,
                format: "jpeg"
            }
        );
    }
}

#[test]
fn every_input_and_output_format_round_trips() {
    let img = noisy(800, 600);
    let sources = [
        ("jpeg", jpeg(&img, 90)),
        ("png", encoded(&img, ImageFormat::Png)),
        ("webp", encoded(&img, ImageFormat::WebP)),
        ("gif", encoded(&img, ImageFormat::Gif)),
    ];
    let outputs = [
        (OutputFormat::Webp, ImageFormat::WebP),
        (OutputFormat::Png, ImageFormat::Png),
        (OutputFormat::Jpeg, ImageFormat::Jpeg),
    ];
    for (tag, source) in &sources {
        for (format, written) in outputs {
            for (fit, size) in [(Fit::Contain, (200, 150)), (Fit::Cover, (100, 200))] {
                let box_h = if fit == Fit::Cover { 200 } else { 300 };
                let box_w = if fit == Fit::Cover { 100 } else { 200 };
                let thumb = make_thumbnail(source, &opts(box_w, box_h, fit, format), 1_000_000)
                    .unwrap_or_else(|e| panic!("{tag} → {format:?} {fit:?}: {e}"));
                let case = format!("{tag} → {format:?} {fit:?}");
                assert_eq!(reread(&thumb), (written, size.0, size.1), "{case}");
                assert_eq!(thumb.source.format, *tag, "{case}");
                assert_eq!(thumb.format, format, "{case}");
            }
        }
    }
}

#[test]
fn contain_never_enlarges_and_cover_does() {
    let small = encoded(&noisy(40, 30), ImageFormat::Png);
    let kept = make_thumbnail(&small, &ThumbnailOptions::new(256, 256), DEFAULT_MAX_PIXELS)
        .expect("small image");
    assert_eq!((kept.width, kept.height), (40, 30));
    let filled = make_thumbnail(
        &small,
        &opts(64, 64, Fit::Cover, OutputFormat::Png),
        DEFAULT_MAX_PIXELS,
    )
    .expect("small image");
    assert_eq!(reread(&filled), (ImageFormat::Png, 64, 64));
}

/// `jpeg` with an APP1 Exif segment carrying only `Orientation = value`, right after SOI.
fn with_exif_orientation(jpeg: &[u8], value: u8) -> Vec<u8> {
    let mut exif = b"Exif\0\0".to_vec();
    exif.extend_from_slice(b"MM\0\x2A\0\0\0\x08"); // big-endian TIFF, first IFD at 8
    exif.extend_from_slice(&[0, 1]); // one entry
    exif.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, value, 0, 0]); // SHORT, count 1
    exif.extend_from_slice(&[0, 0, 0, 0]); // no next IFD
    let length = u16::try_from(exif.len() + 2).expect("short");
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&exif);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn exif_orientation_turns_the_thumbnail() {
    let landscape = jpeg(&noisy(80, 40), 90);
    let upright = make_thumbnail(
        &landscape,
        &ThumbnailOptions::new(32, 32),
        DEFAULT_MAX_PIXELS,
    )
    .expect("plain");
    assert_eq!((upright.width, upright.height), (32, 16));

    let rotated = with_exif_orientation(&landscape, 6);
    for fit in [Fit::Contain, Fit::Cover] {
        let thumb = make_thumbnail(
            &rotated,
            &opts(32, 20, fit, OutputFormat::Png),
            DEFAULT_MAX_PIXELS,
        )
        .expect("oriented");
        let size = if fit == Fit::Contain {
            (10, 20)
        } else {
            (32, 20)
        };
        assert_eq!(
            reread(&thumb),
            (ImageFormat::Png, size.0, size.1),
            "{fit:?}"
        );
        assert_eq!((thumb.source.width, thumb.source.height), (40, 80));
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    let mut chunk = kind.to_vec();
    chunk.extend_from_slice(data);
    let length = u32::try_from(data.len()).expect("small");
    png.extend_from_slice(&length.to_be_bytes());
    png.extend_from_slice(&chunk);
    png.extend_from_slice(&crc32(&chunk).to_be_bytes());
}

/// A 70-byte PNG whose IHDR claims `width` × `height` and whose only IDAT is an empty zlib
/// stream: anything but a refusal from the header would be a decoding error.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png_chunk(&mut png, b"IHDR", &ihdr);
    png_chunk(&mut png, b"IDAT", &[0x78, 0x9C, 0x03, 0, 0, 0, 0, 1]);
    png_chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn a_bomb_is_refused_from_its_header_naming_its_size_and_the_setting() {
    let started = Instant::now();
    let err = make_thumbnail(
        &png_header(100_000, 100_000),
        &ThumbnailOptions::new(256, 256),
        DEFAULT_MAX_PIXELS,
    )
    .expect_err("10 gigapixels");
    assert!(
        matches!(
            err,
            ThumbnailError::TooLarge {
                width: 100_000,
                height: 100_000,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("100000×100000") && text.contains("OFFLOAD_THUMBNAIL_MAX_PIXELS"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "nothing decoded"
    );

    // A real image one pixel over a small limit.
    let img = encoded(&noisy(20, 20), ImageFormat::Png);
    let err = make_thumbnail(&img, &ThumbnailOptions::new(8, 8), 399).expect_err("400 > 399");
    assert!(err.to_string().contains("20×20 (400 pixels)"), "{err}");
    assert!(make_thumbnail(&img, &ThumbnailOptions::new(8, 8), 400).is_ok());
}

#[test]
fn bad_bytes_are_refused_saying_why() {
    let photo = jpeg(&noisy(200, 200), 90);
    let png = encoded(&noisy(200, 200), ImageFormat::Png);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "not an image: the data is empty"),
        (
            "text",
            b"hello, this is text".to_vec(),
            "not an image: the data is not JPEG, PNG, WebP or GIF (it starts with 68 65 6c",
        ),
        (
            "bmp",
            [b"BM".as_slice(), &[0; 60]].concat(),
            "unsupported image format BMP",
        ),
        (
            "truncated jpeg",
            photo[..photo.len() / 2].to_vec(),
            "corrupt JPEG: ",
        ),
        (
            "truncated png",
            png[..png.len() / 2].to_vec(),
            "corrupt PNG: ",
        ),
        ("jpeg header only", photo[..4].to_vec(), "corrupt JPEG: "),
    ];
    for (case, bytes, want) in cases {
        let err = make_thumbnail(&bytes, &ThumbnailOptions::new(64, 64), DEFAULT_MAX_PIXELS)
            .expect_err(case);
        assert!(err.to_string().starts_with(want), "{case}: {err}");
    }
    let err = make_thumbnail(&photo, &ThumbnailOptions::new(0, 64), DEFAULT_MAX_PIXELS)
        .expect_err("width 0");
    assert!(err.to_string().contains("width is 0"), "{err}");
}

fn handler() -> std::sync::Arc<dyn Handler> {
    let mut registry = Registry::default();
    registry
        .register(ImageThumbnail::default())
        .expect("valid spec");
    registry
        .get(&JobKind::parse("image.thumbnail").expect("valid"))
        .expect("registered")
}

fn ctx_with(field: &str, data: Vec<u8>) -> JobContext {
    JobContext::standalone("image.thumbnail", Duration::from_secs(30)).with_input(InputFile {
        field: field.to_owned(),
        filename: Some("photo.jpg".to_owned()),
        content_type: "image/jpeg".to_owned(),
        data: data.into(),
    })
}

#[tokio::test]
async fn the_handler_attaches_the_thumbnail_and_reports_it() {
    let ctx = ctx_with("image", jpeg(&noisy(400, 300), 90));
    let result = handler()
        .run(ctx.clone(), json!({"file": "image", "width": 100}))
        .await
        .expect("thumbnail");
    let attached = ctx.attached();
    assert_eq!(attached.len(), 1);
    assert_eq!(attached[0].name, "thumbnail.webp");
    assert_eq!(attached[0].content_type, "image/webp");
    assert_eq!(
        result,
        json!({"width": 100, "height": 75, "format": "webp", "bytes": attached[0].bytes.len(),
               "source": {"width": 400, "height": 300, "format": "jpeg"}})
    );

    let ctx = ctx_with("image", jpeg(&noisy(400, 300), 90));
    let payload = json!({"file": "image", "width": 50, "height": 40, "fit": "cover",
                         "format": "jpeg", "quality": 60});
    let result = handler().run(ctx.clone(), payload).await.expect("jpeg");
    assert_eq!(
        (result["width"].clone(), result["height"].clone()),
        (json!(50), json!(40))
    );
    assert_eq!(ctx.attached()[0].name, "thumbnail.jpg");
    assert_eq!(ctx.attached()[0].content_type, "image/jpeg");
}

#[tokio::test]
async fn a_handler_without_its_image_fails_permanently_saying_why() {
    let ctx = || ctx_with("image", jpeg(&noisy(40, 30), 90));
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"file": "photo", "width": 64}),
            "no file was uploaded under the form field \"photo\" named by payload.file \
             (uploaded: \"image\")",
        ),
        (
            json!({"file": "image", "url": "https://example.com/a.jpg", "width": 64}),
            "give exactly one of file and url, not both",
        ),
        (json!({"width": 64}), "give exactly one of file"),
        (
            json!({"url": "https://example.com/a.jpg", "width": 64}),
            "url sources are refused: set OFFLOAD_FETCH_ALLOW",
        ),
        (
            json!({"file": "image", "width": 5000}),
            "invalid thumbnail options: width is 5000",
        ),
    ];
    for (payload, want) in cases {
        let outcome = handler().run(ctx(), payload.clone()).await;
        let Err(JobError::Permanent(message)) = outcome else {
            panic!("{payload}: {outcome:?}");
        };
        assert!(message.starts_with(want), "{payload}: {message}");
    }
    let bare = JobContext::standalone("image.thumbnail", Duration::from_secs(5));
    let Err(JobError::Permanent(message)) = handler()
        .run(bare, json!({"file": "image", "width": 8}))
        .await
    else {
        panic!("no uploads at all");
    };
    assert!(message.ends_with("(no files were uploaded)"), "{message}");
}

#[tokio::test]
async fn a_cancelled_job_stops_before_decoding_and_may_run_again() {
    let ctx = ctx_with("image", jpeg(&noisy(40, 30), 90));
    ctx.cancellation.cancel();
    let outcome = handler()
        .run(ctx.clone(), json!({"file": "image", "width": 8}))
        .await;
    assert_eq!(
        outcome,
        Err(JobError::Retryable("cancelled before decoding".to_owned()))
    );
    assert!(ctx.attached().is_empty());
}

#[test]
fn the_schema_refuses_what_the_handler_refuses() {
    let spec = crate::handlers::spec_of(&ImageThumbnail::default()).expect("valid");
    assert_eq!(spec.queue.as_str(), "thumbnails");
    let schema = spec.compile().expect("compiles");
    for good in [
        json!({"file": "image", "width": 256}),
        json!({"url": "https://example.com/a.png", "width": 1, "height": 4096}),
        json!({"file": "f", "width": 64, "fit": "cover", "format": "jpeg", "quality": 100}),
    ] {
        assert!(schema.check(&good).is_ok(), "{good}");
    }
    for bad in [
        json!({"width": 256}),
        json!({"file": "image", "url": "https://example.com/a.png", "width": 256}),
        json!({"file": "image"}),
        json!({"file": "image", "width": 0}),
        json!({"file": "image", "width": 4097}),
        json!({"file": "image", "width": 64, "height": 0}),
        json!({"file": "image", "width": 64, "quality": 0}),
        json!({"file": "image", "width": 64, "quality": 101}),
        json!({"file": "image", "width": 64, "fit": "stretch"}),
        json!({"file": "image", "width": 64, "format": "gif"}),
        json!({"file": "image", "width": 64, "extra": 1}),
        json!({"file": 7, "width": 64}),
    ] {
        assert!(schema.check(&bad).is_err(), "{bad}");
    }
}

/// Not a correctness test: the pipeline's speed on a 12 MP photo to a 256 px WebP. Run with
/// `cargo test --release -p offload-worker thumbnail_speed -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement; run in release"]
fn thumbnail_speed_of_a_12_megapixel_jpeg() {
    let photo = jpeg(&noisy(4000, 3000), 90);
    let opts = ThumbnailOptions::new(256, 256);
    let runs: u32 = 10;
    let started = Instant::now();
    for _ in 0..runs {
        let thumb = make_thumbnail(&photo, &opts, DEFAULT_MAX_PIXELS).expect("thumbnail");
        assert_eq!((thumb.width, thumb.height), (256, 192));
    }
    let per = started.elapsed() / runs;
    println!(
        "12 MP JPEG ({} bytes, q90) → 256×192 WebP: {:.1} ms per thumbnail",
        photo.len(),
        per.as_secs_f64() * 1000.0
    );
}
