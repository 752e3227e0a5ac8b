//! Tiled detection: an image too large to go through the network at once
//! (for memory, or because the model was trained on crops at the image's own
//! resolution) is cut into overlapping square tiles, each tile is detected as
//! an image of its own, and the tiles' maps are blended back into one map of
//! the image's size. Inside the overlaps the weights fall off toward each
//! tile's border, where a tile sees the least context, so seams do not show.

use crate::backend::NnBackend;
use crate::config::TileLayout;
use crate::detect::{self, DetectOptions, Detections};
use crate::error::{Error, Result};
use crate::nn::score_model::ScoreModel;

/// Where the tiles of a `width × height` image lie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TileGrid {
    pub width: usize,
    pub height: usize,
    /// Side of every (square) tile.
    pub tile: usize,
    /// Overlap asked for between neighbouring tiles (the actual overlap is
    /// at least this; tiles are spread evenly).
    pub overlap: usize,
    /// Top-left corner (x, y) of each tile, row by row.
    pub origins: Vec<(usize, usize)>,
}

/// Evenly spread starts of `tile`-long windows covering `0..len` with
/// neighbours overlapping by at least `overlap`: the first at 0, the last
/// flush with the end.
fn starts(len: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if len <= tile {
        return vec![0];
    }
    let stride = tile - overlap;
    let n = (len - tile).div_ceil(stride) + 1;
    (0..n)
        .map(|k| ((k * (len - tile)) as f64 / (n - 1) as f64).round() as usize)
        .collect()
}

impl TileGrid {
    /// The tiles of a `width × height` image: `tile` px squares overlapping
    /// by at least `overlap` px (less than `tile`).
    pub fn new(width: usize, height: usize, tile: usize, overlap: usize) -> Result<Self> {
        if tile == 0 || overlap >= tile {
            return Err(Error::Invalid(format!(
                "tiles of {tile} px overlapping by {overlap} px: the overlap must be smaller than the tile"
            )));
        }
        if width < tile || height < tile {
            return Err(Error::Invalid(format!(
                "the image is {width}×{height}, smaller than one {tile} px tile: use a smaller tile, or no tiling"
            )));
        }
        let xs = starts(width, tile, overlap);
        let origins = starts(height, tile, overlap)
            .into_iter()
            .flat_map(|y| xs.iter().map(move |&x| (x, y)))
            .collect();
        Ok(TileGrid {
            width,
            height,
            tile,
            overlap,
            origins,
        })
    }

    /// The tiles of a CHW image with `channels` channels, each CHW
    /// `channels × tile × tile`, in the order of `origins`.
    pub fn cut(&self, image: &[f32], channels: usize) -> Result<Vec<Vec<f32>>> {
        let (w, h, t) = (self.width, self.height, self.tile);
        if image.len() != channels * w * h {
            return Err(Error::Invalid(format!(
                "a {channels}×{h}×{w} image has {} values, got {}",
                channels * w * h,
                image.len()
            )));
        }
        Ok(self
            .origins
            .iter()
            .map(|&(x0, y0)| {
                let mut out = Vec::with_capacity(channels * t * t);
                for c in 0..channels {
                    for y in y0..y0 + t {
                        let row = (c * h + y) * w + x0;
                        out.extend_from_slice(&image[row..row + t]);
                    }
                }
                out
            })
            .collect())
    }

    /// Weight of position `i` (0..tile) along one axis: rising from near 0
    /// at the tile's border to 1 half the overlap inside it.
    fn weight(&self, i: usize) -> f32 {
        let ramp = (self.overlap as f32 / 2.0).max(1.0);
        let from_border = (i.min(self.tile - 1 - i) as f32 + 0.5) / ramp;
        from_border.min(1.0)
    }

    /// One `width × height` map (row-major) from the tiles' `tile × tile`
    /// maps: at each pixel the weighted mean of the tiles covering it.
    pub fn stitch(&self, maps: &[Vec<f32>]) -> Result<Vec<f32>> {
        let t = self.tile;
        if maps.len() != self.origins.len() || maps.iter().any(|m| m.len() != t * t) {
            return Err(Error::Invalid(format!(
                "stitching needs {} maps of {t}×{t}",
                self.origins.len()
            )));
        }
        let axis: Vec<f32> = (0..t).map(|i| self.weight(i)).collect();
        let mut sum = vec![0f64; self.width * self.height];
        let mut weights = vec![0f64; sum.len()];
        for (&(x0, y0), map) in self.origins.iter().zip(maps) {
            for y in 0..t {
                for x in 0..t {
                    let wgt = (axis[x] * axis[y]) as f64;
                    let p = (y0 + y) * self.width + x0 + x;
                    sum[p] += wgt * map[y * t + x] as f64;
                    weights[p] += wgt;
                }
            }
        }
        Ok(sum
            .iter()
            .zip(&weights)
            .map(|(s, w)| (s / w) as f32)
            .collect())
    }
}

/// How an image is tiled for detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    /// Side of the tiles (a multiple of the model's total downsampling).
    pub tile: usize,
    /// Overlap between neighbouring tiles, px.
    pub overlap: usize,
    /// Tiles per network batch: bounds the memory whatever the image's size.
    pub batch: usize,
}

impl Tiling {
    /// Errors unless the overlap is smaller than the tile and tiles go
    /// through the network at least one at a time.
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 {
            return Err(Error::Invalid("batch must be at least 1 tile".into()));
        }
        TileGrid::new(self.tile, self.tile, self.tile, self.overlap).map(|_| ())
    }

    /// `tile` px tiles overlapping by a quarter of a tile, `batch` at a time.
    pub fn new(tile: usize, batch: usize) -> Self {
        Tiling {
            tile,
            overlap: tile / 4,
            batch,
        }
    }

    /// This tiling with `overlap` px between tiles instead, if given (the
    /// `--tile-overlap` flag).
    pub fn with_overlap(self, overlap: Option<usize>) -> Self {
        Tiling {
            overlap: overlap.unwrap_or(self.overlap),
            ..self
        }
    }

    /// The side and overlap, as a calibration records them.
    pub fn layout(&self) -> TileLayout {
        TileLayout {
            tile: self.tile,
            overlap: self.overlap,
        }
    }
}

/// The anomaly map (`width × height`, row-major) of one CHW image of any
/// size and its image score, detected tile by tile under `opts` (its `size`
/// is ignored: the tiles are `tiling.tile` px). The tiles' maps are blended
/// unsmoothed and the whole map is then smoothed once, so smoothing does not
/// see the seams; a verdict reading's maps likewise, and the score is read
/// from the whole blended map. `progress(done, total)` follows the tiles.
#[allow(clippy::too_many_arguments)]
pub fn tiled_map<B: NnBackend>(
    be: &B,
    model: &ScoreModel<B>,
    image: &[f32],
    width: usize,
    height: usize,
    opts: &DetectOptions,
    tiling: Tiling,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Detections> {
    let grid = TileGrid::new(width, height, tiling.tile, tiling.overlap)?;
    let tiles = grid.cut(image, model.net.config.channels)?;
    let mut tile_opts = opts.clone();
    tile_opts.size = Some(tiling.tile);
    tile_opts.settings.smooth = 0.0;
    if let Some(v) = &mut tile_opts.settings.verdict {
        v.smooth = 0.0;
    }
    let refs: Vec<&[f32]> = tiles.iter().map(|t| t.as_slice()).collect();
    let ids = vec![0u64; refs.len()];
    let total = refs.len();
    let found = detect::detections_batched(
        be,
        model,
        &refs,
        &ids,
        &tile_opts,
        tiling.batch,
        &mut |done| progress(done, total),
    )?;
    let whole = |maps: &[Vec<f32>], sigma: f32| -> Result<Vec<f32>> {
        let map = grid.stitch(maps)?;
        Ok(detect::gaussian_blur_rect(&map, width, height, sigma))
    };
    let s = &opts.settings;
    let map = whole(&found.maps, s.smooth)?;
    let score = match detect::verdict_in_use(s, opts.mode) {
        Some(v) => detect::top_mean(&whole(&found.verdict_maps, v.smooth)?, v.score_top),
        None => detect::top_mean(&map, s.score_top),
    };
    Ok(Detections {
        maps: vec![map],
        scores: vec![score],
        verdict_maps: Vec::new(),
    })
}
