//! A small, dependency-free line plot written as a PNG: palette image, a 5x7 bitmap font, and a
//! fixed-Huffman deflate with run / previous-row matches (plots are mostly flat colour).

use std::io::Write;

/// Palette indices.
pub const WHITE: u8 = 0;
pub const BLACK: u8 = 1;
pub const GREY: u8 = 2;
pub const LIGHT: u8 = 3;
/// Series colours, in order.
pub const SERIES: [u8; 6] = [4, 5, 6, 7, 8, 9];
const PALETTE: [[u8; 3]; 10] = [
    [255, 255, 255],
    [20, 20, 20],
    [140, 140, 140],
    [225, 225, 225],
    [31, 119, 180],  // blue
    [214, 39, 40],   // red
    [44, 160, 44],   // green
    [255, 127, 14],  // orange
    [148, 103, 189], // purple
    [23, 190, 207],  // cyan
];

pub struct Canvas {
    pub w: usize,
    pub h: usize,
    px: Vec<u8>,
}

impl Canvas {
    pub fn new(w: usize, h: usize) -> Canvas {
        Canvas { w, h, px: vec![WHITE; w * h] }
    }

    pub fn set(&mut self, x: i64, y: i64, c: u8) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            self.px[y as usize * self.w + x as usize] = c;
        }
    }

    pub fn rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: u8) {
        for y in y0.min(y1)..=y0.max(y1) {
            for x in x0.min(x1)..=x0.max(x1) {
                self.set(x, y, c);
            }
        }
    }

    /// A line `thick` pixels wide; `dash` > 0 draws dashes of that many pixels.
    pub fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), thick: i64, c: u8, dash: usize) {
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for i in 0..=steps {
            if dash > 0 && (i / dash) % 2 == 1 {
                continue;
            }
            let t = i as f64 / steps as f64;
            let (x, y) = ((x0 + t * (x1 - x0)).round() as i64, (y0 + t * (y1 - y0)).round() as i64);
            let r = thick / 2;
            self.rect(x - r, y - r, x - r + thick - 1, y - r + thick - 1, c);
        }
    }

    /// Text at `(x, y)` (top-left), glyphs scaled by `scale`; lower case is drawn as upper case.
    pub fn text(&mut self, x: i64, y: i64, s: &str, scale: i64, c: u8) {
        let mut cx = x;
        for ch in s.chars() {
            let g = glyph(ch.to_ascii_uppercase());
            for (row, bits) in g.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        self.rect(cx + col * scale, y + row as i64 * scale, cx + col * scale + scale - 1, y + row as i64 * scale + scale - 1, c);
                    }
                }
            }
            cx += 6 * scale;
        }
    }

    /// Text drawn bottom-to-top (for a y-axis label), its first glyph at the bottom.
    pub fn text_up(&mut self, x: i64, y: i64, s: &str, scale: i64, c: u8) {
        let mut cy = y;
        for ch in s.chars() {
            let g = glyph(ch.to_ascii_uppercase());
            for (row, bits) in g.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        // rotate 90° counter-clockwise: (col, row) -> (row, -col)
                        let px = x + row as i64 * scale;
                        let py = cy - col * scale;
                        self.rect(px, py - scale + 1, px + scale - 1, py, c);
                    }
                }
            }
            cy -= 6 * scale;
        }
    }

    pub fn text_width(s: &str, scale: i64) -> i64 {
        s.chars().count() as i64 * 6 * scale
    }

    /// Encodes the canvas as a PNG.
    pub fn png(&self) -> Vec<u8> {
        let mut raw = Vec::with_capacity((self.w + 1) * self.h);
        for row in self.px.chunks(self.w) {
            raw.push(0); // filter: none
            raw.extend_from_slice(row);
        }
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&(self.w as u32).to_be_bytes());
        ihdr.extend_from_slice(&(self.h as u32).to_be_bytes());
        ihdr.extend_from_slice(&[8, 3, 0, 0, 0]); // 8-bit palette
        chunk(&mut out, b"IHDR", &ihdr);
        chunk(&mut out, b"PLTE", &PALETTE.concat());
        chunk(&mut out, b"IDAT", &zlib(&raw, self.w + 1));
        chunk(&mut out, b"IEND", &[]);
        out
    }

    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::File::create(path)?.write_all(&self.png())
    }
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    /// Appends `n` bits of `v`, least significant first.
    fn put(&mut self, v: u32, n: u32) {
        self.acc |= (v as u64) << self.n;
        self.n += n;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// Appends a Huffman code (most significant bit first).
    fn code(&mut self, code: u32, len: u32) {
        let rev = code.reverse_bits() >> (32 - len);
        self.put(rev, len);
    }

    fn literal(&mut self, v: u32) {
        match v {
            0..=143 => self.code(0x30 + v, 8),
            144..=255 => self.code(0x190 + v - 144, 9),
            256..=279 => self.code(v - 256, 7),
            _ => self.code(0xC0 + v - 280, 8),
        }
    }
}

const LEN_BASE: [u32; 29] = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
const LEN_EXTRA: [u32; 29] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
const DIST_BASE: [u32; 30] =
    [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577];
const DIST_EXTRA: [u32; 30] = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];

/// zlib stream of `data` with one fixed-Huffman deflate block; matches are tried at distance 1
/// (runs) and `row` (the previous scanline).
fn zlib(data: &[u8], row: usize) -> Vec<u8> {
    let mut b = Bits { out: vec![0x78, 0x01], acc: 0, n: 0 };
    b.put(1, 1); // final block
    b.put(1, 2); // fixed Huffman
    let mut i = 0;
    while i < data.len() {
        let mut best = (0usize, 0usize);
        for dist in [1, row] {
            if dist == 0 || dist > i || dist > 32768 {
                continue;
            }
            let mut l = 0;
            while l < 258 && i + l < data.len() && data[i + l] == data[i + l - dist] {
                l += 1;
            }
            if l > best.0 {
                best = (l, dist);
            }
        }
        if best.0 >= 3 {
            let (len, dist) = best;
            let li = LEN_BASE.iter().rposition(|&base| base <= len as u32).expect("len >= 3");
            b.literal(257 + li as u32);
            b.put(len as u32 - LEN_BASE[li], LEN_EXTRA[li]);
            let di = DIST_BASE.iter().rposition(|&base| base <= dist as u32).expect("dist >= 1");
            b.code(di as u32, 5);
            b.put(dist as u32 - DIST_BASE[di], DIST_EXTRA[di]);
            i += len;
        } else {
            b.literal(data[i] as u32);
            i += 1;
        }
    }
    b.literal(256);
    if b.n > 0 {
        b.out.push(b.acc as u8);
    }
    let (mut s1, mut s2) = (1u32, 0u32);
    for &x in data {
        s1 = (s1 + x as u32) % 65521;
        s2 = (s2 + s1) % 65521;
    }
    b.out.extend_from_slice(&((s2 << 16) | s1).to_be_bytes());
    b.out
}

fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '×' | '*' => [0, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0],
        '<' => [0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02],
        '>' => [0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08],
        _ => [0; 7],
    }
}

/// One line of a chart: label, colour, dashed or not, and (x, y) points.
pub struct Series {
    pub label: String,
    pub color: u8,
    pub dash: usize,
    pub points: Vec<(f64, f64)>,
}

/// One panel: title, x tick labels (at x = 0, 1, ...), and its series.
pub struct Panel {
    pub title: String,
    pub x_ticks: Vec<String>,
    pub series: Vec<Series>,
}

/// Draws panels side by side, sharing the y axis label, with a title and a legend under them.
pub fn chart(title: &str, y_label: &str, x_label: &str, panels: &[Panel], footer: &[String]) -> Canvas {
    let (pw, ph) = (560i64, 400i64);
    let legend: Vec<(&str, u8, usize)> = {
        let mut seen: Vec<(&str, u8, usize)> = Vec::new();
        for p in panels {
            for s in &p.series {
                if !seen.iter().any(|(l, _, _)| *l == s.label) {
                    seen.push((&s.label, s.color, s.dash));
                }
            }
        }
        seen
    };
    let legend_rows = legend.len().div_ceil(3) as i64;
    let (left, top) = (90i64, 60i64);
    let w = left + panels.len() as i64 * (pw + 40) + 10;
    let h = top + ph + 70 + legend_rows * 22 + footer.len() as i64 * 16 + 10;
    let mut c = Canvas::new(w as usize, h as usize);
    c.text((w - Canvas::text_width(title, 2)) / 2, 16, title, 2, BLACK);
    for (pi, p) in panels.iter().enumerate() {
        let x0 = left + pi as i64 * (pw + 40);
        let (y0, y1, x1) = (top, top + ph, x0 + pw);
        let ymax = p.series.iter().flat_map(|s| s.points.iter().map(|pt| pt.1)).fold(0.0f64, f64::max);
        let step = nice_step(ymax.max(1e-9) / 5.0);
        let ytop = (ymax / step).ceil().max(1.0) * step;
        let nx = p.x_ticks.len().max(2) as f64 - 1.0;
        let px = |x: f64| x0 as f64 + 30.0 + x / nx * (pw as f64 - 60.0);
        let py = |y: f64| y1 as f64 - y / ytop * (ph as f64 - 10.0);
        let mut v = 0.0;
        while v <= ytop + step / 2.0 {
            let y = py(v) as i64;
            c.line((x0 as f64, y as f64), (x1 as f64, y as f64), 1, if v == 0.0 { GREY } else { LIGHT }, 0);
            let lbl = if step < 1.0 { format!("{v:.1}") } else { format!("{v:.0}") };
            c.text(x0 - 8 - Canvas::text_width(&lbl, 2), y - 7, &lbl, 2, BLACK);
            v += step;
        }
        c.line((x0 as f64, y0 as f64), (x0 as f64, y1 as f64), 1, GREY, 0);
        for (i, t) in p.x_ticks.iter().enumerate() {
            let x = px(i as f64);
            c.line((x, y1 as f64), (x, y1 as f64 + 5.0), 1, GREY, 0);
            c.text(x as i64 - Canvas::text_width(t, 2) / 2, y1 + 10, t, 2, BLACK);
        }
        c.text(x0 + (pw - Canvas::text_width(&p.title, 2)) / 2, y0 - 22, &p.title, 2, BLACK);
        for s in &p.series {
            for w in s.points.windows(2) {
                c.line((px(w[0].0), py(w[0].1)), (px(w[1].0), py(w[1].1)), 3, s.color, s.dash);
            }
            for pt in &s.points {
                let (x, y) = (px(pt.0) as i64, py(pt.1) as i64);
                c.rect(x - 4, y - 4, x + 4, y + 4, s.color);
            }
        }
        c.text(x0 + (pw - Canvas::text_width(x_label, 2)) / 2, y1 + 34, x_label, 2, BLACK);
    }
    c.text_up(16, top + ph / 2 + Canvas::text_width(y_label, 2) / 2, y_label, 2, BLACK);
    let ly = top + ph + 62;
    for (i, (label, color, dash)) in legend.iter().enumerate() {
        let (col, row) = (i as i64 % 3, i as i64 / 3);
        let x = left + col * 360;
        let y = ly + row * 22;
        c.line((x as f64, y as f64 + 7.0), (x as f64 + 40.0, y as f64 + 7.0), 3, *color, *dash);
        c.text(x + 50, y, label, 2, BLACK);
    }
    let fy = ly + legend_rows * 22 + 4;
    for (i, f) in footer.iter().enumerate() {
        c.text(left, fy + i as i64 * 16, f, 1, GREY);
    }
    c
}

fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}
