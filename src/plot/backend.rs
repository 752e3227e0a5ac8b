//! plotters' RGB bitmap backend with text from [`crate::text`].
//!
//! plotters draws text through a font feature: `ab_glyph` or `ttf` natively,
//! and on wasm32 the browser DOM, which can measure text but not draw it into
//! a bitmap (and panics without a `window`). Overriding the two text methods of
//! the backend gives the same glyphs on every target, from the embedded font.

use plotters::prelude::{BitMapBackend, DrawingBackend};
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};

use crate::text;

/// A [`BitMapBackend`] over an RGB buffer, with our text.
pub struct TextBackend<'a> {
    bitmap: BitMapBackend<'a>,
}

/// What the bitmap backend reports (it never fails on an in-memory buffer).
pub type BackendError = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

type DrawResult = Result<(), DrawingErrorKind<BackendError>>;

impl<'a> TextBackend<'a> {
    /// Draws into `buffer`, RGB bytes of a `size.0`×`size.1` picture, row-major.
    /// The caller sizes the buffer (3 · w · h bytes): plotters panics otherwise.
    pub(super) fn new(buffer: &'a mut [u8], size: (u32, u32)) -> Self {
        TextBackend {
            bitmap: BitMapBackend::with_buffer(buffer, size),
        }
    }
}

impl DrawingBackend for TextBackend<'_> {
    type ErrorType = BackendError;

    fn get_size(&self) -> (u32, u32) {
        self.bitmap.get_size()
    }

    fn ensure_prepared(&mut self) -> DrawResult {
        self.bitmap.ensure_prepared()
    }

    fn present(&mut self) -> DrawResult {
        self.bitmap.present()
    }

    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> DrawResult {
        self.bitmap.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> DrawResult {
        self.bitmap.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> DrawResult {
        self.bitmap.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> DrawResult {
        self.bitmap.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> DrawResult {
        self.bitmap.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> DrawResult {
        self.bitmap.fill_polygon(vert, style)
    }

    fn blit_bitmap(&mut self, pos: BackendCoord, size: (u32, u32), src: &[u8]) -> DrawResult {
        self.bitmap.blit_bitmap(pos, size, src)
    }

    /// The horizontal size, as plotters expects (it swaps for rotated text).
    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        Ok(text::measure(text, style.size() as f32))
    }

    /// Places the text's box by the style's anchor, rotates it about `pos` as
    /// the style says (the y-axis title is turned by 270°) and blends each
    /// glyph pixel by its coverage.
    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> DrawResult {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let size = style.size() as f32;
        let (w, h) = text::measure(text, size);
        let (w, h) = (w as i32, h as i32);
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0,
            HPos::Center => -w / 2,
            HPos::Right => -w,
        };
        let dy = match anchor.v_pos {
            VPos::Top => 0,
            VPos::Center => -h / 2,
            VPos::Bottom => -h,
        };
        let turn = style.transform();
        let mut result = Ok(());
        text::rasterize(text, size, |x, y, coverage| {
            if result.is_ok() {
                let (x, y) = turn.transform(x as i32 + dx, y as i32 + dy);
                let at = (pos.0 + x, pos.1 + y);
                result = self.bitmap.draw_pixel(at, color.mix(coverage as f64));
            }
        });
        result
    }
}
