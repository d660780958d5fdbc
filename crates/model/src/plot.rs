//! A loss-curve PNG drawn pixel by pixel: axes, a training polyline and a validation polyline.
//!
//! The image has no text. Training loss is blue, validation loss orange, epochs run left to
//! right from the first to the last, and the vertical axis runs from 0 at the bottom axis to
//! the largest finite loss at the top.

use std::path::Path;

use crate::error::ModelError;

const WIDTH: usize = 640;
const HEIGHT: usize = 400;
const MARGIN: usize = 40;
const WHITE: [u8; 3] = [255, 255, 255];
const BLACK: [u8; 3] = [0, 0, 0];
const GREY: [u8; 3] = [210, 210, 210];
/// Colour of the training-loss polyline.
pub const TRAINING_COLOUR: [u8; 3] = [31, 119, 180];
/// Colour of the validation-loss polyline.
pub const VALIDATION_COLOUR: [u8; 3] = [255, 127, 14];

/// An RGB raster with a bottom-left plotting origin inside a margin.
struct Canvas {
    pixels: Vec<u8>,
}

impl Canvas {
    fn new() -> Self {
        let mut pixels = Vec::with_capacity(WIDTH * HEIGHT * 3);
        for _ in 0..WIDTH * HEIGHT {
            pixels.extend_from_slice(&WHITE);
        }
        Canvas { pixels }
    }

    fn put(&mut self, x: i64, y: i64, colour: [u8; 3]) {
        if x < 0 || y < 0 || x >= WIDTH as i64 || y >= HEIGHT as i64 {
            return;
        }
        let index = (y as usize * WIDTH + x as usize) * 3;
        self.pixels[index..index + 3].copy_from_slice(&colour);
    }

    /// Draws a line two pixels thick between image coordinates with Bresenham's algorithm.
    fn line(&mut self, from: (i64, i64), to: (i64, i64), colour: [u8; 3]) {
        let (mut x, mut y) = from;
        let dx = (to.0 - x).abs();
        let dy = -(to.1 - y).abs();
        let step_x = if x < to.0 { 1 } else { -1 };
        let step_y = if y < to.1 { 1 } else { -1 };
        let mut error = dx + dy;
        loop {
            self.put(x, y, colour);
            self.put(x + 1, y, colour);
            self.put(x, y + 1, colour);
            if (x, y) == to {
                break;
            }
            let doubled = 2 * error;
            if doubled >= dy {
                error += dy;
                x += step_x;
            }
            if doubled <= dx {
                error += dx;
                y += step_y;
            }
        }
    }
}

/// Draws the two loss series (one value per epoch) and writes the PNG to `path`.
pub fn write_loss_curve(
    path: &Path,
    training: &[f64],
    validation: &[f64],
) -> Result<(), ModelError> {
    let plot_error = |reason: String| ModelError::Plot {
        path: path.to_path_buf(),
        reason,
    };
    let canvas = draw(training, validation);

    let file = std::fs::File::create(path)
        .map_err(|e| ModelError::io("creating loss-curve image", path, e))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), WIDTH as u32, HEIGHT as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .map_err(|e| plot_error(e.to_string()))?;
    writer
        .write_image_data(&canvas.pixels)
        .map_err(|e| plot_error(e.to_string()))?;
    writer.finish().map_err(|e| plot_error(e.to_string()))
}

fn draw(training: &[f64], validation: &[f64]) -> Canvas {
    let mut canvas = Canvas::new();
    let left = MARGIN as i64;
    let right = (WIDTH - MARGIN) as i64;
    let top = MARGIN as i64;
    let bottom = (HEIGHT - MARGIN) as i64;

    // Horizontal grid lines at quarters of the loss range, then the axes on top.
    for quarter in 1..=4 {
        let y = bottom - (bottom - top) * quarter / 4;
        canvas.line((left, y), (right, y), GREY);
    }
    canvas.line((left, bottom), (right, bottom), BLACK);
    canvas.line((left, top), (left, bottom), BLACK);

    let max_loss = training
        .iter()
        .chain(validation)
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let epochs = training.len().max(validation.len());
    if epochs == 0 || max_loss <= 0.0 {
        return canvas;
    }
    let to_pixel = |epoch: usize, loss: f64| -> (i64, i64) {
        let fraction_x = if epochs == 1 {
            0.0
        } else {
            epoch as f64 / (epochs - 1) as f64
        };
        let fraction_y = (loss / max_loss).clamp(0.0, 1.0);
        (
            left + (fraction_x * (right - left) as f64).round() as i64,
            bottom - (fraction_y * (bottom - top) as f64).round() as i64,
        )
    };

    for (series, colour) in [(training, TRAINING_COLOUR), (validation, VALIDATION_COLOUR)] {
        let points: Vec<(i64, i64)> = series
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(epoch, &loss)| to_pixel(epoch, loss))
            .collect();
        for pair in points.windows(2) {
            canvas.line(pair[0], pair[1], colour);
        }
        if let [only] = points.as_slice() {
            canvas.line(*only, *only, colour);
        }
    }
    canvas
}

#[cfg(test)]
mod tests {
    use super::*;

    fn colour_at(canvas: &Canvas, x: usize, y: usize) -> [u8; 3] {
        let i = (y * WIDTH + x) * 3;
        [canvas.pixels[i], canvas.pixels[i + 1], canvas.pixels[i + 2]]
    }

    #[test]
    fn polylines_start_and_end_where_expected() {
        // Training falls from the maximum (top-left corner) to 0 (bottom-right corner).
        let canvas = draw(&[2.0, 1.0, 0.0], &[1.0, 1.0, 1.0]);
        assert_eq!(colour_at(&canvas, MARGIN, MARGIN), TRAINING_COLOUR);
        assert_eq!(
            colour_at(&canvas, WIDTH - MARGIN, HEIGHT - MARGIN),
            TRAINING_COLOUR
        );
        // Validation is flat at half height.
        assert_eq!(
            colour_at(&canvas, WIDTH / 2 + 50, (MARGIN + HEIGHT - MARGIN) / 2),
            VALIDATION_COLOUR
        );
        assert_eq!(colour_at(&canvas, WIDTH / 2, MARGIN / 2), WHITE);
    }

    #[test]
    fn png_file_decodes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.png");
        write_loss_curve(&path, &[1.0, 0.5], &[1.2, 0.9]).unwrap();
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let reader = decoder.read_info().unwrap();
        assert_eq!(reader.info().width, WIDTH as u32);
        assert_eq!(reader.info().height, HEIGHT as u32);
    }
}
