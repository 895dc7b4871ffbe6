//! The geohash arithmetic behind the GEO commands, as Redis 7.0 does it:
//! 52-bit interleaved cell numbers (the sorted-set score), the cell of a
//! point and its eight neighbours, the boxes that cover a search area,
//! Haversine distances, and the partial sort Redis uses for COUNT.
//!
//! Every formula keeps Redis's order of floating-point operations, because
//! replies show coordinates with 17 decimals and which cells a search
//! visits decides the order of unsorted results.

/// Web-Mercator limits: points beyond them cannot be indexed.
pub const LAT_MIN: f64 = -85.05112878;
pub const LAT_MAX: f64 = 85.05112878;
pub const LON_MIN: f64 = -180.0;
pub const LON_MAX: f64 = 180.0;
/// 26 steps of longitude and latitude: 52 bits, exact in a double score.
pub const STEP_MAX: u8 = 26;

/// Quadratic mean radius of the earth for WGS-84, the one Redis uses.
const EARTH_RADIUS_M: f64 = 6372797.560856;
const MERCATOR_MAX: f64 = 20037726.37;
const D_R: f64 = std::f64::consts::PI / 180.0;

fn deg_rad(a: f64) -> f64 {
    a * D_R
}
fn rad_deg(a: f64) -> f64 {
    a / D_R
}

/// A cell: `step` bits of each coordinate, interleaved (latitude in the
/// even bits, longitude in the odd ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cell {
    pub bits: u64,
    pub step: u8,
}

impl Cell {
    /// A neighbour that was ruled out of a search.
    pub fn is_zero(&self) -> bool {
        self.bits == 0 && self.step == 0
    }

    /// The cell right after this one in score order: its exclusive bound.
    pub fn next(&self) -> Cell {
        Cell {
            bits: self.bits + 1,
            step: self.step,
        }
    }

    /// The cell's first 52-bit score (its last is excluded: the next cell's).
    pub fn align52(&self) -> u64 {
        self.bits << (52 - u32::from(self.step) * 2)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub min: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Area {
    pub lon: Range,
    pub lat: Range,
}

const LON_RANGE: Range = Range {
    min: LON_MIN,
    max: LON_MAX,
};
const LAT_RANGE: Range = Range {
    min: LAT_MIN,
    max: LAT_MAX,
};
/// GEOHASH strings use the standard latitude range, not the Mercator one.
const STD_LAT_RANGE: Range = Range {
    min: -90.0,
    max: 90.0,
};

/// Spreads the 32 bits of `v` to the even bit positions of a u64.
fn spread(v: u32) -> u64 {
    let mut x = u64::from(v);
    x = (x | (x << 16)) & 0x0000_FFFF_0000_FFFF;
    x = (x | (x << 8)) & 0x00FF_00FF_00FF_00FF;
    x = (x | (x << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    x = (x | (x << 2)) & 0x3333_3333_3333_3333;
    (x | (x << 1)) & 0x5555_5555_5555_5555
}

/// The inverse of `spread`: the even bits of `v`, packed.
fn squeeze(v: u64) -> u32 {
    let mut x = v & 0x5555_5555_5555_5555;
    x = (x | (x >> 1)) & 0x3333_3333_3333_3333;
    x = (x | (x >> 2)) & 0x0F0F_0F0F_0F0F_0F0F;
    x = (x | (x >> 4)) & 0x00FF_00FF_00FF_00FF;
    x = (x | (x >> 8)) & 0x0000_FFFF_0000_FFFF;
    x = (x | (x >> 16)) & 0x0000_0000_FFFF_FFFF;
    x as u32
}

pub fn valid(lon: f64, lat: f64) -> bool {
    (LON_MIN..=LON_MAX).contains(&lon) && (LAT_MIN..=LAT_MAX).contains(&lat)
}

/// The cell of `step` bits holding the point, in the given ranges; None
/// outside them (or outside the Mercator limits).
fn encode_in(lon_r: Range, lat_r: Range, lon: f64, lat: f64, step: u8) -> Option<Cell> {
    if step == 0 || step > 32 || !valid(lon, lat) {
        return None;
    }
    if lat < lat_r.min || lat > lat_r.max || lon < lon_r.min || lon > lon_r.max {
        return None;
    }
    let scale = (1u64 << step) as f64;
    let lat_off = (lat - lat_r.min) / (lat_r.max - lat_r.min) * scale;
    let lon_off = (lon - lon_r.min) / (lon_r.max - lon_r.min) * scale;
    // Truncation toward zero, as C's conversion to uint32_t.
    Some(Cell {
        bits: spread(lat_off as u32) | (spread(lon_off as u32) << 1),
        step,
    })
}

/// The cell of `step` bits holding a point (Mercator ranges).
pub fn encode(lon: f64, lat: f64, step: u8) -> Option<Cell> {
    encode_in(LON_RANGE, LAT_RANGE, lon, lat, step)
}

/// The 52-bit score GEOADD stores for a point.
pub fn score_of(lon: f64, lat: f64) -> Option<u64> {
    encode(lon, lat, STEP_MAX).map(|c| c.align52())
}

fn decode_in(lon_r: Range, lat_r: Range, c: Cell) -> Option<Area> {
    if c.is_zero() {
        return None;
    }
    let lat_i = squeeze(c.bits);
    let lon_i = squeeze(c.bits >> 1);
    let div = (1u64 << c.step) as f64;
    let lat_scale = lat_r.max - lat_r.min;
    let lon_scale = lon_r.max - lon_r.min;
    let at = |min: f64, i: u32, scale: f64| min + (f64::from(i) * 1.0 / div) * scale;
    Some(Area {
        lat: Range {
            min: at(lat_r.min, lat_i, lat_scale),
            max: at(lat_r.min, lat_i.wrapping_add(1), lat_scale),
        },
        lon: Range {
            min: at(lon_r.min, lon_i, lon_scale),
            max: at(lon_r.min, lon_i.wrapping_add(1), lon_scale),
        },
    })
}

/// The area of a cell (Mercator ranges).
pub fn decode(c: Cell) -> Option<Area> {
    decode_in(LON_RANGE, LAT_RANGE, c)
}

/// A double score as C converts it to uint64_t on x86-64 (out-of-range
/// and negative scores, which ZADD can put in a geo set, decode to
/// whatever Redis decodes them to).
fn score_bits(score: f64) -> u64 {
    const TWO63: f64 = 9_223_372_036_854_775_808.0;
    let cvtt = |x: f64| -> u64 {
        // cvttsd2si: the "integer indefinite" value when out of range.
        if x.is_nan() || !(-TWO63..TWO63).contains(&x) {
            0x8000_0000_0000_0000
        } else {
            (x as i64) as u64
        }
    };
    if score < TWO63 {
        cvtt(score)
    } else {
        cvtt(score - TWO63) ^ 0x8000_0000_0000_0000
    }
}

/// The point a 52-bit score stands for: the centre of its cell, clamped
/// to the Mercator limits.
pub fn point_of(score: f64) -> (f64, f64) {
    let c = Cell {
        bits: score_bits(score),
        step: STEP_MAX,
    };
    // A step-26 cell is never the zero cell, so decoding cannot fail.
    let a = decode(c).unwrap_or(Area {
        lon: Range { min: 0.0, max: 0.0 },
        lat: Range { min: 0.0, max: 0.0 },
    });
    let lon = ((a.lon.min + a.lon.max) / 2.0).clamp(LON_MIN, LON_MAX);
    let lat = ((a.lat.min + a.lat.max) / 2.0).clamp(LAT_MIN, LAT_MAX);
    (lon, lat)
}

const GEOALPHABET: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";

/// The 11-character GEOHASH string of a score: its point re-encoded in the
/// standard ranges (latitude -90..90); the 11th character carries no
/// bits and is always '0'.
pub fn hash_string(score: f64) -> [u8; 11] {
    let (lon, lat) = point_of(score);
    let bits = encode_in(LON_RANGE, STD_LAT_RANGE, lon, lat, STEP_MAX).map_or(0, |c| c.bits);
    let mut out = [b'0'; 11];
    for (i, ch) in out.iter_mut().enumerate().take(10) {
        let idx = (bits >> (52 - (i + 1) * 5)) & 0x1f;
        *ch = GEOALPHABET.get(idx as usize).copied().unwrap_or(b'0');
    }
    out
}

fn move_x(c: &mut Cell, d: i8) {
    if d == 0 {
        return;
    }
    let shift = 64 - u32::from(c.step) * 2;
    let mut x = c.bits & 0xaaaa_aaaa_aaaa_aaaa;
    let y = c.bits & 0x5555_5555_5555_5555;
    let zz = 0x5555_5555_5555_5555u64 >> shift;
    if d > 0 {
        x = x.wrapping_add(zz + 1);
    } else {
        x = (x | zz).wrapping_sub(zz + 1);
    }
    x &= 0xaaaa_aaaa_aaaa_aaaau64 >> shift;
    c.bits = x | y;
}

fn move_y(c: &mut Cell, d: i8) {
    if d == 0 {
        return;
    }
    let shift = 64 - u32::from(c.step) * 2;
    let x = c.bits & 0xaaaa_aaaa_aaaa_aaaa;
    let mut y = c.bits & 0x5555_5555_5555_5555;
    let zz = 0xaaaa_aaaa_aaaa_aaaau64 >> shift;
    if d > 0 {
        y = y.wrapping_add(zz + 1);
    } else {
        y = (y | zz).wrapping_sub(zz + 1);
    }
    y &= 0x5555_5555_5555_5555u64 >> shift;
    c.bits = x | y;
}

fn moved(c: Cell, dx: i8, dy: i8) -> Cell {
    let mut n = c;
    move_x(&mut n, dx);
    move_y(&mut n, dy);
    n
}

/// What a search covers.
#[derive(Debug, Clone, Copy)]
pub enum ShapeKind {
    /// Radius, in the unit.
    Radius(f64),
    /// Width and height, in the unit.
    Box(f64, f64),
}

#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub lon: f64,
    pub lat: f64,
    /// Metres per unit.
    pub conversion: f64,
    pub kind: ShapeKind,
}

impl Shape {
    /// `[min_lon, min_lat, max_lon, max_lat]` around the centre.
    fn bounds(&self) -> [f64; 4] {
        let (h, w) = match self.kind {
            ShapeKind::Radius(r) => (self.conversion * r, self.conversion * r),
            ShapeKind::Box(w, h) => (self.conversion * (h / 2.0), self.conversion * (w / 2.0)),
        };
        let lat_delta = rad_deg(h / EARTH_RADIUS_M);
        let lon_top = rad_deg(w / EARTH_RADIUS_M / deg_rad(self.lat + lat_delta).cos());
        let lon_bottom = rad_deg(w / EARTH_RADIUS_M / deg_rad(self.lat - lat_delta).cos());
        // The wider edge is the one nearer the equator.
        let d = if self.lat < 0.0 { lon_bottom } else { lon_top };
        [
            self.lon - d,
            self.lat - lat_delta,
            self.lon + d,
            self.lat + lat_delta,
        ]
    }

    /// The distance from the centre if the point is inside, in metres.
    pub fn contains(&self, lon: f64, lat: f64) -> Option<f64> {
        match self.kind {
            ShapeKind::Radius(r) => {
                let d = distance(self.lon, self.lat, lon, lat);
                (d <= r * self.conversion).then_some(d)
            }
            ShapeKind::Box(w, h) => {
                let (w, h) = (w * self.conversion, h * self.conversion);
                if lat_distance(lat, self.lat) > h / 2.0 {
                    return None;
                }
                if distance(lon, lat, self.lon, lat) > w / 2.0 {
                    return None;
                }
                Some(distance(self.lon, self.lat, lon, lat))
            }
        }
    }

    /// The cells a search visits, in Redis's order: the centre's, then
    /// north, south, east, west, north-east, north-west, south-east,
    /// south-west; ruled-out neighbours are zero cells.
    pub fn cells(&self) -> [Cell; 9] {
        let [min_lon, min_lat, max_lon, max_lat] = self.bounds();
        let radius_m = match self.kind {
            ShapeKind::Radius(r) => r,
            ShapeKind::Box(w, h) => ((w / 2.0) * (w / 2.0) + (h / 2.0) * (h / 2.0)).sqrt(),
        } * self.conversion;
        let mut steps = estimate_steps(radius_m, self.lat);
        let around = |steps: u8| {
            let c = encode(self.lon, self.lat, steps).unwrap_or_default();
            let n = [
                moved(c, 0, 1),
                moved(c, 0, -1),
                moved(c, 1, 0),
                moved(c, -1, 0),
                moved(c, 1, 1),
                moved(c, -1, 1),
                moved(c, 1, -1),
                moved(c, -1, -1),
            ];
            (c, n)
        };
        let (mut c, mut n) = around(steps);
        let area_of = |c: Cell| decode(c);
        // Near the edge of a cell the estimated step can leave a neighbour
        // too small to reach the edge of the search area: one step coarser.
        let short = match (area_of(n[0]), area_of(n[1]), area_of(n[2]), area_of(n[3])) {
            (Some(north), Some(south), Some(east), Some(west)) => {
                north.lat.max < max_lat
                    || south.lat.min > min_lat
                    || east.lon.max < max_lon
                    || west.lon.min > min_lon
            }
            _ => false,
        };
        if steps > 1 && short {
            steps -= 1;
            (c, n) = around(steps);
        }
        if steps >= 2 {
            if let Some(area) = area_of(c) {
                // Indices: 0 N, 1 S, 2 E, 3 W, 4 NE, 5 NW, 6 SE, 7 SW.
                if area.lat.min < min_lat {
                    clear(&mut n, [1, 7, 6]);
                }
                if area.lat.max > max_lat {
                    clear(&mut n, [0, 4, 5]);
                }
                if area.lon.min < min_lon {
                    clear(&mut n, [3, 7, 5]);
                }
                if area.lon.max > max_lon {
                    clear(&mut n, [2, 6, 4]);
                }
            }
        }
        [c, n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7]]
    }
}

fn clear(n: &mut [Cell; 8], which: [usize; 3]) {
    for i in which {
        if let Some(c) = n.get_mut(i) {
            *c = Cell::default();
        }
    }
}

/// The cell size (in steps) whose neighbourhood covers a search radius.
fn estimate_steps(range_m: f64, lat: f64) -> u8 {
    if range_m == 0.0 {
        return 26;
    }
    let mut range = range_m;
    let mut step: i32 = 1;
    while range < MERCATOR_MAX {
        range *= 2.0;
        step += 1;
    }
    step -= 2;
    // Meridians converge toward the poles: wider cells there.
    if !(-66.0..=66.0).contains(&lat) {
        step -= 1;
        if !(-80.0..=80.0).contains(&lat) {
            step -= 1;
        }
    }
    step.clamp(1, 26) as u8
}

/// Distance along a meridian, in metres.
fn lat_distance(lat1: f64, lat2: f64) -> f64 {
    EARTH_RADIUS_M * (deg_rad(lat2) - deg_rad(lat1)).abs()
}

/// Haversine great-circle distance, in metres.
pub fn distance(lon1: f64, lat1: f64, lon2: f64, lat2: f64) -> f64 {
    let lon1r = deg_rad(lon1);
    let lon2r = deg_rad(lon2);
    let v = ((lon2r - lon1r) / 2.0).sin();
    if v == 0.0 {
        return lat_distance(lat1, lat2);
    }
    let lat1r = deg_rad(lat1);
    let lat2r = deg_rad(lat2);
    let u = ((lat2r - lat1r) / 2.0).sin();
    let a = u * u + lat1r.cos() * lat2r.cos() * v * v;
    2.0 * EARTH_RADIUS_M * a.sqrt().asin()
}

/// A distance as Redis prints it: rounded (half to even) to 4 decimals.
pub fn format_distance(d: f64) -> String {
    let scaled = (d * 10000.0).round_ties_even();
    // Distances on the earth are far below i64 range; saturate otherwise.
    let v = scaled as i64;
    let neg = v < 0;
    let abs = v.unsigned_abs();
    format!(
        "{}{}.{:04}",
        if neg { "-" } else { "" },
        abs / 10000,
        abs % 10000
    )
}

/// A coordinate as Redis prints it: 17 decimals, trailing zeros (and a
/// bare point) trimmed, "-0" as "0".
pub fn format_coord(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let s = format!("{v:.17}");
    let t = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s.as_str()
    };
    if t == "-0" {
        "0".into()
    } else {
        t.to_string()
    }
}

/// Sorts `v` so that its elements `lo..=hi` are the ones a full sort would
/// put there, in order, with Redis's partial quicksort (Bentley-McIlroy
/// three-way partitioning, insertion sort under 7 elements), so that
/// equal distances come out in the same order as Redis's.
pub fn partial_sort<T>(
    v: &mut [T],
    lo: usize,
    hi: usize,
    cmp: &impl Fn(&T, &T) -> std::cmp::Ordering,
) {
    let n = v.len();
    sort_segment(v, 0, n, lo, hi, cmp);
}

/// One segment (`n` elements at `base`) of `partial_sort`; `lo` and `hi`
/// stay indices into the whole slice, so a part that does not meet them
/// is left alone.
fn sort_segment<T>(
    v: &mut [T],
    mut base: usize,
    mut n: usize,
    lo: usize,
    hi: usize,
    cmp: &impl Fn(&T, &T) -> std::cmp::Ordering,
) {
    use std::cmp::Ordering::*;
    // Indices stay inside the segment; `get` keeps that unchecked claim
    // from ever becoming a panic.
    let at = |s: &[T], i: usize, j: usize| match (s.get(i), s.get(j)) {
        (Some(x), Some(y)) => cmp(x, y),
        _ => Equal,
    };
    loop {
        let Some(seg) = v.get_mut(base..base + n) else {
            return;
        };
        if n < 7 {
            for m in 1..n {
                let mut l = m;
                while l > 0 && at(seg, l - 1, l) == Greater {
                    seg.swap(l, l - 1);
                    l -= 1;
                }
            }
            return;
        }
        let med3 = |s: &[T], a: usize, b: usize, c: usize| -> usize {
            if at(s, a, b) == Less {
                if at(s, b, c) == Less {
                    b
                } else if at(s, a, c) == Less {
                    c
                } else {
                    a
                }
            } else if at(s, b, c) == Greater {
                b
            } else if at(s, a, c) == Less {
                a
            } else {
                c
            }
        };
        let mut pm = n / 2;
        if n > 7 {
            let mut pl = 0;
            let mut pn = n - 1;
            if n > 40 {
                let d = n / 8;
                pl = med3(seg, pl, pl + d, pl + 2 * d);
                pm = med3(seg, pm - d, pm, pm + d);
                pn = med3(seg, pn - 2 * d, pn - d, pn);
            }
            pm = med3(seg, pl, pm, pn);
        }
        seg.swap(0, pm);
        let (mut pa, mut pb) = (1usize, 1usize);
        // pc and pd may step to just before pb (one below 1 at most).
        let (mut pc, mut pd) = (n as isize - 1, n as isize - 1);
        loop {
            while pb as isize <= pc {
                let r = at(seg, pb, 0);
                if r == Greater {
                    break;
                }
                if r == Equal {
                    seg.swap(pa, pb);
                    pa += 1;
                }
                pb += 1;
            }
            while pb as isize <= pc {
                let r = at(seg, pc as usize, 0);
                if r == Less {
                    break;
                }
                if r == Equal {
                    seg.swap(pc as usize, pd as usize);
                    pd -= 1;
                }
                pc -= 1;
            }
            if pb as isize > pc {
                break;
            }
            seg.swap(pb, pc as usize);
            pb += 1;
            pc -= 1;
        }
        let vecswap = |s: &mut [T], a: usize, b: usize, k: usize| {
            for i in 0..k {
                s.swap(a + i, b + i);
            }
        };
        let r = pa.min(pb - pa);
        vecswap(seg, 0, pb - r, r);
        let (pc, pd) = (pc as usize, pd as usize);
        let r = (pd - pc).min(n - pd - 1);
        vecswap(seg, pb, n - r, r);
        let overlaps = |s: usize, len: usize| {
            let e = s + len - 1;
            !((lo < s && hi < s) || (lo > e && hi > e))
        };
        let left = pb - pa;
        if left > 1 && overlaps(base, left) {
            sort_segment(v, base, left, lo, hi, cmp);
        }
        let right = pd - pc;
        if right > 1 {
            let start = base + n - right;
            if overlaps(start, right) {
                base = start;
                n = right;
                continue;
            }
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values from redis-server 7.0.15 (GEOADD then ZSCORE,
    // GEOPOS, GEOHASH, GEODIST).
    #[test]
    fn scores_match_redis() {
        assert_eq!(score_of(LON_MIN, LAT_MIN), Some(0));
        assert_eq!(score_of(0.0, 0.0), Some(3377699720527872));
        assert_eq!(score_of(LON_MAX, LAT_MAX), Some(13510798882111488));
        assert_eq!(score_of(181.0, 0.0), None);
        assert_eq!(score_of(0.0, 85.06), None);
    }

    #[test]
    fn points_match_redis() {
        let p = |s: f64| {
            let (x, y) = point_of(s);
            (format_coord(x), format_coord(y))
        };
        assert_eq!(
            p(0.0),
            (
                "-179.99999731779098511".to_string(),
                "-85.05112751263942528".to_string()
            )
        );
        assert_eq!(
            p(3377699720527872.0),
            (
                "0.00000268220901489".to_string(),
                "0.00000126736058093".to_string()
            )
        );
        assert_eq!(
            p(13510798882111488.0),
            ("180".to_string(), "85.0511287799999991".to_string())
        );
        // Scores no GEOADD makes (ZADD -1, 1e300) decode as Redis's do.
        assert_eq!(
            p(-1.0),
            ("180".to_string(), "85.0511287799999991".to_string())
        );
        assert_eq!(
            p(1e300),
            (
                "-179.99999731779098511".to_string(),
                "-85.05112751263942528".to_string()
            )
        );
        assert_eq!(
            p(4503599627370496.0),
            (
                "-179.99999731779098511".to_string(),
                "85.0511287799999991".to_string()
            )
        );
    }

    #[test]
    fn hash_strings_match_redis() {
        assert_eq!(&hash_string(0.0), b"00bh0hbj200");
        assert_eq!(&hash_string(13510798882111488.0), b"bp05b5048p0");
        assert_eq!(&hash_string(3377699720527872.0), b"s0000000000");
    }

    #[test]
    fn spread_and_squeeze_are_inverse() {
        for v in [0u32, 1, 0xdead_beef, u32::MAX, 1 << 25] {
            assert_eq!(squeeze(spread(v)), v);
        }
    }

    #[test]
    fn distances_print_like_redis() {
        assert_eq!(format_distance(0.0), "0.0000");
        assert_eq!(format_distance(166274.15156960033), "166274.1516");
        assert_eq!(format_distance(0.00005), "0.0000");
        assert_eq!(format_distance(1.23456), "1.2346");
    }

    #[test]
    fn partial_sort_orders_the_requested_range() {
        let cmp = |a: &i32, b: &i32| a.cmp(b);
        for n in [0usize, 1, 5, 7, 8, 41, 100] {
            let orig: Vec<i32> = (0..n as i32).map(|i| (i * 7919) % 97).collect();
            let mut sorted = orig.clone();
            sorted.sort();
            for k in [1usize, 3, n / 2, n] {
                if k == 0 || k > n {
                    continue;
                }
                let mut v = orig.clone();
                partial_sort(&mut v, 0, k - 1, &cmp);
                assert_eq!(v[..k], sorted[..k], "n {n} k {k}");
            }
        }
    }
}
