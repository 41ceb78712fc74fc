//! The built-in kind `image.thumbnail` (queue `thumbnails`): an uploaded (or, once wired, a
//! fetched) JPEG, PNG, WebP or GIF made into a WebP, PNG or JPEG thumbnail, attached as the
//! job's artifact. The pure pipeline is [`make_thumbnail`], also used by the benchmark.

use std::io::Cursor;

use bytes::Bytes;
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::{
    DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, metadata::Orientation,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use offload_shared::Settings;

use crate::{Artifact, Job, JobContext, JobError};

/// Default of `OFFLOAD_THUMBNAIL_MAX_PIXELS`: 40 megapixels, so a 12 MP (or a 36 MP) photo passes.
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

/// Largest thumbnail side a payload may ask for.
pub const MAX_SIDE: u32 = 4096;

/// Payload of `image.thumbnail`: where the image is (exactly one of `file` and `url`) and the
/// thumbnail wanted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"required": ["file"]}, {"required": ["url"]}]))]
pub struct ThumbnailPayload {
    /// The form field the image was uploaded under (multipart submit). Exactly one of `file`
    /// and `url`.
    #[serde(default)]
    pub file: Option<String>,
    /// An image to fetch (http or https). Exactly one of `file` and `url`.
    #[serde(default)]
    pub url: Option<String>,
    /// Width of the box the thumbnail fits (`contain`) or fills (`cover`), in pixels.
    #[schemars(range(min = 1, max = 4096))]
    pub width: u32,
    /// Height of the box, in pixels; default: `width` (a square box).
    #[serde(default)]
    #[schemars(range(min = 1, max = 4096))]
    pub height: Option<u32>,
    /// `contain` (default): the whole image inside the box, aspect kept, never enlarged;
    /// `cover`: exactly the box, aspect kept, the centre cropped out.
    #[serde(default)]
    pub fit: Fit,
    /// Output format: `webp` (default, lossless), `png` or `jpeg`.
    #[serde(default)]
    pub format: OutputFormat,
    /// JPEG quality, 1 to 100 (default 85); ignored by the lossless formats.
    #[serde(default)]
    #[schemars(range(min = 1, max = 100))]
    pub quality: Option<u8>,
}

/// How the image is fitted into the thumbnail's box.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Inside the box, aspect ratio kept; an image smaller than the box keeps its size.
    #[default]
    Contain,
    /// Exactly the box, aspect ratio kept: the centre of the image, cropped.
    Cover,
}

/// The thumbnail's file format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Lossless WebP (the `image` crate's encoder is lossless only).
    #[default]
    Webp,
    /// PNG.
    Png,
    /// JPEG at the payload's quality.
    Jpeg,
}

impl OutputFormat {
    /// The artifact's file extension: `webp`, `png` or `jpg`.
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Webp => "webp",
            OutputFormat::Png => "png",
            OutputFormat::Jpeg => "jpg",
        }
    }

    /// The artifact's media type.
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Webp => "image/webp",
            OutputFormat::Png => "image/png",
            OutputFormat::Jpeg => "image/jpeg",
        }
    }
}

/// What [`make_thumbnail`] makes: the box, the fit, the format and the JPEG quality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThumbnailOptions {
    /// Box width in pixels, 1 to [`MAX_SIDE`].
    pub width: u32,
    /// Box height in pixels, 1 to [`MAX_SIDE`].
    pub height: u32,
    /// How the image fits the box.
    pub fit: Fit,
    /// The output format.
    pub format: OutputFormat,
    /// JPEG quality, 1 to 100.
    pub quality: u8,
}

impl ThumbnailOptions {
    /// A `width` × `height` WebP thumbnail that contains the image, at JPEG quality 85.
    ///
    /// ```
    /// let opts = offload_worker::handlers::thumbnail::ThumbnailOptions::new(256, 256);
    /// assert_eq!(opts.quality, 85);
    /// ```
    pub fn new(width: u32, height: u32) -> Self {
        ThumbnailOptions {
            width,
            height,
            fit: Fit::Contain,
            format: OutputFormat::Webp,
            quality: 85,
        }
    }

    /// The options a payload asks for, with their ranges checked.
    fn of(p: &ThumbnailPayload) -> Result<Self, ThumbnailError> {
        let opts = ThumbnailOptions {
            width: p.width,
            height: p.height.unwrap_or(p.width),
            fit: p.fit,
            format: p.format,
            quality: p.quality.unwrap_or(85),
        };
        opts.check()?;
        Ok(opts)
    }

    fn check(&self) -> Result<(), ThumbnailError> {
        for (name, side) in [("width", self.width), ("height", self.height)] {
            if !(1..=MAX_SIDE).contains(&side) {
                return Err(ThumbnailError::InvalidOptions(format!(
                    "{name} is {side}, it must be 1 to {MAX_SIDE}"
                )));
            }
        }
        if !(1..=100).contains(&self.quality) {
            return Err(ThumbnailError::InvalidOptions(format!(
                "quality is {}, it must be 1 to 100",
                self.quality
            )));
        }
        Ok(())
    }
}

/// The source image as its header described it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SourceInfo {
    /// Width in pixels, after its EXIF orientation.
    pub width: u32,
    /// Height in pixels, after its EXIF orientation.
    pub height: u32,
    /// `jpeg`, `png`, `webp` or `gif`.
    pub format: &'static str,
}

/// A thumbnail [`make_thumbnail`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    /// The encoded file.
    pub bytes: Vec<u8>,
    /// Its width in pixels.
    pub width: u32,
    /// Its height in pixels.
    pub height: u32,
    /// Its format.
    pub format: OutputFormat,
    /// The image it was made from.
    pub source: SourceInfo,
}

/// Why [`make_thumbnail`] made no thumbnail. Every variant but `Cancelled` is about the input:
/// trying again will not help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ThumbnailError {
    /// The options are out of range.
    #[error("invalid thumbnail options: {0}")]
    InvalidOptions(String),
    /// The bytes are no image format known here.
    #[error("not an image: {0}")]
    NotAnImage(String),
    /// An image format known, but not read here (BMP, TIFF, AVIF, ...).
    #[error("unsupported image format {format}: image.thumbnail reads JPEG, PNG, WebP and GIF")]
    Unsupported {
        /// The format's name.
        format: String,
    },
    /// The header claims more pixels than allowed: refused before decoding.
    #[error(
        "the image is {width}×{height} ({pixels} pixels), more than the {max} pixels allowed \
         (OFFLOAD_THUMBNAIL_MAX_PIXELS)"
    )]
    TooLarge {
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// `width` × `height`.
        pixels: u64,
        /// The limit.
        max: u64,
    },
    /// The data is damaged or truncated.
    #[error("corrupt {format}: {message}")]
    Corrupt {
        /// The format's name, e.g. `JPEG`.
        format: &'static str,
        /// What the decoder said.
        message: String,
    },
    /// The resize failed.
    #[error("cannot resize the image: {0}")]
    Resize(String),
    /// The encoder failed.
    #[error("cannot encode the thumbnail: {0}")]
    Encode(String),
    /// The job was cancelled between two steps.
    #[error("cancelled before {0}")]
    Cancelled(&'static str),
}

/// Makes a thumbnail of the image in `bytes`: reads its header (refusing more than `max_pixels`
/// pixels before decoding anything), decodes it under [`image::Limits`], resizes it with
/// `fast_image_resize` (Catmull-Rom), applies its EXIF orientation and encodes it.
///
/// ```
/// use offload_worker::handlers::thumbnail::{make_thumbnail, ThumbnailOptions};
/// let mut png = Vec::new();
/// image::DynamicImage::new_rgb8(400, 300)
///     .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
///     .unwrap();
/// let thumb = make_thumbnail(&png, &ThumbnailOptions::new(100, 100), 40_000_000).unwrap();
/// assert_eq!((thumb.width, thumb.height), (100, 75));
/// ```
pub fn make_thumbnail(
    bytes: &[u8],
    opts: &ThumbnailOptions,
    max_pixels: u64,
) -> Result<Thumbnail, ThumbnailError> {
    pipeline(bytes, opts, max_pixels, &|| false)
}

/// [`make_thumbnail`], checking `cancelled` before each heavy step.
fn pipeline(
    bytes: &[u8],
    opts: &ThumbnailOptions,
    max_pixels: u64,
    cancelled: &dyn Fn() -> bool,
) -> Result<Thumbnail, ThumbnailError> {
    opts.check()?;
    if bytes.is_empty() {
        return Err(ThumbnailError::NotAnImage("the data is empty".to_owned()));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ThumbnailError::NotAnImage(e.to_string()))?;
    let Some(format) = reader.format() else {
        let start: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        return Err(ThumbnailError::NotAnImage(format!(
            "the data is not JPEG, PNG, WebP or GIF (it starts with {})",
            start.join(" ")
        )));
    };
    let name = format_name(format);
    reader.limits(limits(max_pixels));
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| decode_error(e, name, max_pixels))?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(ThumbnailError::TooLarge {
            width,
            height,
            pixels,
            max: max_pixels,
        });
    }
    if decoder.total_bytes() > max_alloc(max_pixels) {
        return Err(decode_error(
            ImageError::Limits(image::error::LimitError::from_kind(
                image::error::LimitErrorKind::InsufficientMemory,
            )),
            name,
            max_pixels,
        ));
    }
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let swaps = matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    );
    let (src_w, src_h) = if swaps {
        (height, width)
    } else {
        (width, height)
    };
    if format == ImageFormat::Jpeg {
        check_jpeg_complete(bytes)?;
    }

    if cancelled() {
        return Err(ThumbnailError::Cancelled("decoding"));
    }
    let decoded =
        DynamicImage::from_decoder(decoder).map_err(|e| decode_error(e, name, max_pixels))?;
    // Pixel types fast_image_resize has no kernel for (none today) are made RGBA8 first.
    let decoded = match decoded {
        DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageRgb8(_)
        | DynamicImage::ImageRgba8(_)
        | DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_)
        | DynamicImage::ImageRgb16(_)
        | DynamicImage::ImageRgba16(_)
        | DynamicImage::ImageRgb32F(_)
        | DynamicImage::ImageRgba32F(_) => decoded,
        other => DynamicImage::ImageRgba8(other.to_rgba8()),
    };

    // The box in the image's displayed orientation; the resize runs on the stored pixels (so
    // the box is turned with them) and the orientation is applied to the small thumbnail.
    let (out_w, out_h) = target_size(src_w, src_h, opts);
    let (raw_w, raw_h) = if swaps {
        (out_h, out_w)
    } else {
        (out_w, out_h)
    };
    if cancelled() {
        return Err(ThumbnailError::Cancelled("resizing"));
    }
    let mut small = if (raw_w, raw_h) == (width, height) {
        decoded
    } else {
        let mut dst = DynamicImage::new(raw_w, raw_h, decoded.color());
        // Catmull-Rom: a 2-lobe kernel, about two thirds of Lanczos3's work per pixel, and
        // no visible difference at thumbnail sizes (Lanczos3's extra sharpness rings on edges).
        let mut resize =
            ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));
        if opts.fit == Fit::Cover {
            resize = resize.fit_into_destination(Some((0.5, 0.5)));
        }
        Resizer::new()
            .resize(&decoded, &mut dst, &resize)
            .map_err(|e| ThumbnailError::Resize(e.to_string()))?;
        dst
    };
    small.apply_orientation(orientation);

    if cancelled() {
        return Err(ThumbnailError::Cancelled("encoding"));
    }
    let bytes = encode(&small, opts)?;
    Ok(Thumbnail {
        bytes,
        width: small.width(),
        height: small.height(),
        format: opts.format,
        source: SourceInfo {
            width: src_w,
            height: src_h,
            format: format_tag(format),
        },
    })
}

/// The thumbnail's size for a `src_w` × `src_h` image (displayed orientation).
fn target_size(src_w: u32, src_h: u32, opts: &ThumbnailOptions) -> (u32, u32) {
    match opts.fit {
        Fit::Cover => (opts.width, opts.height),
        Fit::Contain => {
            if src_w <= opts.width && src_h <= opts.height {
                return (src_w, src_h);
            }
            let (sw, sh) = (u64::from(src_w), u64::from(src_h));
            let (bw, bh) = (u64::from(opts.width), u64::from(opts.height));
            // Width-bound when the image is relatively wider than the box: sw/sh >= bw/bh.
            let (w, h) = if sw * bh >= sh * bw {
                (bw, (sh * bw + sw / 2) / sw)
            } else {
                ((sw * bh + sh / 2) / sh, bh)
            };
            let side = |v: u64| u32::try_from(v.max(1)).unwrap_or(MAX_SIDE);
            (side(w), side(h))
        }
    }
}

/// Decoder limits for `max_pixels`: no side longer than the pixel budget, no allocation past
/// what the largest pixel type (RGBA, 16 bits) of that many pixels needs plus slack.
fn limits(max_pixels: u64) -> Limits {
    let mut limits = Limits::default();
    let side = u32::try_from(max_pixels).unwrap_or(u32::MAX);
    limits.max_image_width = Some(side);
    limits.max_image_height = Some(side);
    limits.max_alloc = Some(max_alloc(max_pixels));
    limits
}

fn max_alloc(max_pixels: u64) -> u64 {
    max_pixels.saturating_mul(8).saturating_add(16 << 20)
}

/// zune-jpeg (through `image`) decodes a truncated JPEG without an error, filling the missing
/// part with grey; a complete one has its end-of-image marker after its last scan (entropy-coded
/// data cannot hold `FF D9`: an `FF` there is followed by `00`).
fn check_jpeg_complete(bytes: &[u8]) -> Result<(), ThumbnailError> {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let complete = last_scan.is_some_and(|at| bytes[at..].windows(2).any(|w| w == [0xFF, 0xD9]));
    if complete {
        Ok(())
    } else {
        Err(ThumbnailError::Corrupt {
            format: "JPEG",
            message: "the data ends before its end-of-image marker (truncated?)".to_owned(),
        })
    }
}

fn decode_error(e: ImageError, format: &'static str, max_pixels: u64) -> ThumbnailError {
    match e {
        ImageError::Unsupported(_) => ThumbnailError::Unsupported {
            format: format.to_owned(),
        },
        ImageError::Limits(limit) => ThumbnailError::Corrupt {
            format,
            message: format!(
                "decoding it would pass the limits of OFFLOAD_THUMBNAIL_MAX_PIXELS ({max_pixels} \
                 pixels): {limit}"
            ),
        },
        other => ThumbnailError::Corrupt {
            format,
            message: other.to_string(),
        },
    }
}

fn encode(img: &DynamicImage, opts: &ThumbnailOptions) -> Result<Vec<u8>, ThumbnailError> {
    let encode_error = |e: ImageError| ThumbnailError::Encode(e.to_string());
    let mut out = Vec::new();
    match opts.format {
        OutputFormat::Jpeg => {
            // JPEG has no alpha and 8 bits only.
            let img = match img {
                DynamicImage::ImageLuma8(_) | DynamicImage::ImageRgb8(_) => img.clone(),
                DynamicImage::ImageLumaA8(_)
                | DynamicImage::ImageLuma16(_)
                | DynamicImage::ImageLumaA16(_) => DynamicImage::ImageLuma8(img.to_luma8()),
                _ => DynamicImage::ImageRgb8(img.to_rgb8()),
            };
            let encoder =
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, opts.quality);
            img.write_with_encoder(encoder).map_err(encode_error)?;
        }
        OutputFormat::Png | OutputFormat::Webp => {
            // Thumbnails are 8 bits per channel (WebP cannot hold more).
            let img = match img {
                DynamicImage::ImageLuma8(_)
                | DynamicImage::ImageLumaA8(_)
                | DynamicImage::ImageRgb8(_)
                | DynamicImage::ImageRgba8(_) => img.clone(),
                other if other.color().has_alpha() => DynamicImage::ImageRgba8(other.to_rgba8()),
                other => DynamicImage::ImageRgb8(other.to_rgb8()),
            };
            if opts.format == OutputFormat::Png {
                let encoder = image::codecs::png::PngEncoder::new(&mut out);
                img.write_with_encoder(encoder).map_err(encode_error)?;
            } else {
                let encoder = image::codecs::webp::WebPEncoder::new_lossless(&mut out);
                img.write_with_encoder(encoder).map_err(encode_error)?;
            }
        }
    }
    Ok(out)
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::WebP => "WebP",
        ImageFormat::Gif => "GIF",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Tiff => "TIFF",
        ImageFormat::Avif => "AVIF",
        ImageFormat::Ico => "ICO",
        ImageFormat::Hdr => "HDR",
        ImageFormat::OpenExr => "OpenEXR",
        ImageFormat::Pnm => "PNM",
        ImageFormat::Tga => "TGA",
        ImageFormat::Dds => "DDS",
        ImageFormat::Farbfeld => "farbfeld",
        ImageFormat::Qoi => "QOI",
        _ => "(unnamed)",
    }
}

fn format_tag(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "jpeg",
        ImageFormat::Png => "png",
        ImageFormat::WebP => "webp",
        ImageFormat::Gif => "gif",
        _ => "other",
    }
}

/// The result of an `image.thumbnail` job (the thumbnail itself is its artifact).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThumbnailResult {
    /// Thumbnail width in pixels.
    pub width: u32,
    /// Thumbnail height in pixels.
    pub height: u32,
    /// Thumbnail format.
    pub format: OutputFormat,
    /// Size of the thumbnail file in bytes.
    pub bytes: usize,
    /// The source image.
    pub source: SourceInfo,
}

/// The stock kind `image.thumbnail` on the queue `thumbnails`: makes a thumbnail of an uploaded
/// image (`file`: its form field) or of one fetched from an allowed `url`, and attaches it as
/// `thumbnail.<webp|png|jpg>`.
///
/// ```
/// let settings = offload_worker::Settings::from_env().unwrap();
/// let thumbnails =
///     offload_worker::handlers::thumbnail::ImageThumbnail::from_settings(&settings).unwrap();
/// let worker = offload_worker::Worker::builder(settings).job(thumbnails);
/// ```
#[derive(Debug, Clone)]
pub struct ImageThumbnail {
    max_pixels: u64,
    /// Where `url` sources may be fetched from (`OFFLOAD_FETCH_ALLOW`); `None`: nowhere.
    #[cfg(feature = "webhooks")]
    fetch: Option<std::sync::Arc<crate::handlers::outbound::Outbound>>,
}

/// Largest image a `url` source may download, in bytes.
pub const MAX_FETCH_BYTES: usize = 64 * 1024 * 1024;

/// Longest a `url` source's download may take (less if the attempt's deadline is nearer).
pub const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Default for ImageThumbnail {
    fn default() -> Self {
        ImageThumbnail::new(DEFAULT_MAX_PIXELS)
    }
}

impl ImageThumbnail {
    /// Refuses images of more than `max_pixels` pixels.
    ///
    /// ```
    /// let small = offload_worker::handlers::thumbnail::ImageThumbnail::new(1_000_000);
    /// assert_eq!(small.max_pixels(), 1_000_000);
    /// ```
    pub fn new(max_pixels: u64) -> Self {
        ImageThumbnail {
            max_pixels,
            #[cfg(feature = "webhooks")]
            fetch: None,
        }
    }

    /// Configured by `OFFLOAD_THUMBNAIL_MAX_PIXELS` and, for `url` sources, `OFFLOAD_FETCH_ALLOW`
    /// (empty: every URL refused); an invalid allow-list is refused, naming the entry.
    ///
    /// ```
    /// let settings = offload_worker::Settings::from_env().unwrap();
    /// let job = offload_worker::handlers::thumbnail::ImageThumbnail::from_settings(&settings).unwrap();
    /// assert_eq!(job.max_pixels(), settings.thumbnail_max_pixels);
    /// ```
    pub fn from_settings(settings: &Settings) -> Result<Self, String> {
        #[cfg_attr(not(feature = "webhooks"), allow(unused_mut))]
        let mut job = ImageThumbnail::new(settings.thumbnail_max_pixels);
        #[cfg(feature = "webhooks")]
        {
            let outbound = crate::handlers::outbound::Outbound::from_setting(
                "OFFLOAD_FETCH_ALLOW",
                &settings.fetch_allow,
            )?;
            job.fetch = Some(std::sync::Arc::new(outbound));
        }
        Ok(job)
    }

    /// The largest image accepted, in pixels.
    ///
    /// ```
    /// assert_eq!(offload_worker::handlers::thumbnail::ImageThumbnail::default().max_pixels(), 40_000_000);
    /// ```
    pub fn max_pixels(&self) -> u64 {
        self.max_pixels
    }
}

impl Job for ImageThumbnail {
    const KIND: &'static str = "image.thumbnail";
    type Payload = ThumbnailPayload;
    type Output = ThumbnailResult;

    fn queue(&self) -> &str {
        "thumbnails"
    }

    async fn run(&self, ctx: JobContext, p: ThumbnailPayload) -> Result<ThumbnailResult, JobError> {
        let opts = ThumbnailOptions::of(&p).map_err(JobError::permanent)?;
        let data = match (&p.file, &p.url) {
            (Some(field), None) => uploaded(&ctx, field)?,
            (None, Some(url)) => self.fetch_source(&ctx, url).await?,
            (Some(_), Some(_)) => {
                return Err(JobError::permanent(
                    "give exactly one of file and url, not both",
                ));
            }
            (None, None) => {
                return Err(JobError::permanent(
                    "give exactly one of file (the form field of an uploaded image) and url",
                ));
            }
        };
        let token = ctx.cancellation.clone();
        let max_pixels = self.max_pixels;
        let made = tokio::task::spawn_blocking(move || {
            pipeline(&data, &opts, max_pixels, &|| token.is_cancelled())
        })
        .await
        .map_err(|e| JobError::permanent(format!("the thumbnail pipeline failed: {e}")))?;
        let thumb = made.map_err(|e| match e {
            ThumbnailError::Cancelled(_) => JobError::retryable(e),
            other => JobError::permanent(other),
        })?;
        let result = ThumbnailResult {
            width: thumb.width,
            height: thumb.height,
            format: thumb.format,
            bytes: thumb.bytes.len(),
            source: thumb.source,
        };
        ctx.attach(Artifact::new(
            format!("thumbnail.{}", thumb.format.extension()),
            thumb.format.content_type(),
            thumb.bytes,
        ));
        Ok(result)
    }
}

/// The bytes uploaded under `field`, or a permanent error naming it and what was uploaded.
fn uploaded(ctx: &JobContext, field: &str) -> Result<Bytes, JobError> {
    match ctx.input(field) {
        Some(file) => Ok(file.data.clone()),
        None => {
            let fields: Vec<String> = ctx.input_fields().map(|f| format!("{f:?}")).collect();
            let had = if fields.is_empty() {
                "no files were uploaded".to_owned()
            } else {
                format!("uploaded: {}", fields.join(", "))
            };
            Err(JobError::permanent(format!(
                "no file was uploaded under the form field {field:?} named by payload.file ({had})"
            )))
        }
    }
}

impl ImageThumbnail {
    /// The image at `url`, fetched through the outbound policy of `OFFLOAD_FETCH_ALLOW` (the
    /// same checks as `http.request`: allow-list, every resolved address, no redirects).
    #[cfg(feature = "webhooks")]
    async fn fetch_source(&self, ctx: &JobContext, url: &str) -> Result<Bytes, JobError> {
        let Some(outbound) = &self.fetch else {
            return Err(JobError::permanent(
                "url sources are refused: set OFFLOAD_FETCH_ALLOW to the hosts images may come from",
            ));
        };
        let timeout = FETCH_TIMEOUT.min(ctx.remaining());
        outbound
            .fetch(url, MAX_FETCH_BYTES, timeout)
            .await
            .map_err(|e| e.into_job_error(ctx))
    }

    /// Without the `webhooks` feature there is no outbound client: `url` sources fail.
    #[cfg(not(feature = "webhooks"))]
    async fn fetch_source(&self, _ctx: &JobContext, _url: &str) -> Result<Bytes, JobError> {
        Err(JobError::permanent(
            "url sources need offload-worker's `webhooks` feature (its outbound client)",
        ))
    }
}

#[cfg(test)]
mod tests;
