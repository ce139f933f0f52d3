//! What every plot of bapo needs, whoever draws it (a run's curves, the study's figures): a
//! TrueType font for its text, and a writer that never leaves a truncated PNG. Text needs a
//! font: `BAPO_PLOT_FONT`, else DejaVu Sans or Arial where the system has them (Debian:
//! `fonts-dejavu-core`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::{BitMapBackend, DrawingArea, FontStyle, IntoDrawingArea};

const FONT_CANDIDATES: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// Why a plot was not written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlotError {
    /// No font to draw text with: plots are skipped (a note, not a failure).
    #[error("{0}")]
    NoFont(String),
    /// The font `BAPO_PLOT_FONT` names cannot be used: the user asked for plots in it.
    #[error("{0}")]
    BadFont(String),
    /// A plot could not be drawn or written (e.g. a full disk).
    #[error("{0}")]
    Write(String),
}

/// Registers the font once (as `sans-serif`) and answers the same ever after; the error says
/// how to get one. A font the user named in `BAPO_PLOT_FONT` that cannot be used is an error
/// of its own: it once skipped the plots with a note that read like a missing system font
/// (issue #26).
pub fn font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<Result<(), PlotError>> = OnceLock::new();
    REGISTERED.get_or_init(register_font).clone()
}

fn register_font() -> Result<(), PlotError> {
    let (path, named) = match std::env::var_os("BAPO_PLOT_FONT") {
        Some(path) => (PathBuf::from(path), true),
        None => FONT_CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .map(|p| (p, false))
            .ok_or_else(|| {
                PlotError::NoFont(
                    "no TrueType font found: set BAPO_PLOT_FONT to a .ttf file, or install \
                     fonts-dejavu-core"
                        .into(),
                )
            })?,
    };
    let fail = |why: String| {
        if named {
            PlotError::BadFont(format!(
                "BAPO_PLOT_FONT={}: {why}; name a .ttf file, or unset it to use the system's fonts",
                path.display()
            ))
        } else {
            PlotError::NoFont(format!("{}: {why}", path.display()))
        }
    };
    let bytes = std::fs::read(&path).map_err(|e| fail(e.to_string()))?;
    // plotters keeps the font for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| fail("not a usable TrueType font".into()))
}

/// A plot's drawing area.
pub type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// What drawing on an [`Area`] can fail with (plotters' errors, or the drawer's own).
pub type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Draws a `width` × `height` PNG into `file` with `draw`, after registering the font. The
/// image is drawn and encoded in memory, written beside its place and renamed: a failed draw
/// or write leaves what was at `file` before, and no partial file.
pub fn write_png(
    file: &Path,
    (width, height): (u32, u32),
    draw: impl FnOnce(&Area) -> DrawResult,
) -> Result<(), PlotError> {
    font()?;
    let failed = |why: String| PlotError::Write(format!("{}: {why}", file.display()));
    let png = encode(width, height, draw).map_err(|e| failed(format!("drawing failed: {e}")))?;
    let partial = file.with_extension("png.partial");
    std::fs::write(&partial, png)
        .and_then(|()| std::fs::rename(&partial, file))
        .map_err(|e| {
            let _ = std::fs::remove_file(&partial);
            failed(e.to_string())
        })
}

/// The PNG bytes of what `draw` draws.
fn encode(
    width: u32,
    height: u32,
    draw: impl FnOnce(&Area) -> DrawResult,
) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut pixels = vec![0u8; (width * height * 3) as usize];
    {
        let area = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        draw(&area)?;
        area.present()?;
    }
    let image = image::RgbImage::from_raw(width, height, pixels).ok_or("pixel buffer size")?;
    let mut png = std::io::Cursor::new(Vec::new());
    image.write_to(&mut png, image::ImageOutputFormat::Png)?;
    Ok(png.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use plotters::prelude::*;

    fn folder(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bapo-rundir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_plot_is_a_png_and_a_failing_draw_leaves_the_old_file_and_no_partial() {
        if let Err(PlotError::NoFont(e)) = font() {
            eprintln!("skipping: {e}");
            return;
        }
        let dir = folder("plot");
        let file = dir.join("curve.png");
        write_png(&file, (64, 48), |area| {
            area.fill(&WHITE)?;
            Ok(())
        })
        .unwrap();
        let first = std::fs::read(&file).unwrap();
        assert_eq!(&first[1..4], b"PNG");
        let error = write_png(&file, (64, 48), |_| Err("no data".into())).unwrap_err();
        assert_eq!(
            error,
            PlotError::Write(format!("{}: drawing failed: no data", file.display()))
        );
        assert_eq!(std::fs::read(&file).unwrap(), first);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["curve.png"]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
