// Just enough PNG decoding to tell a screenshot from a blank page: 8-bit RGB
// or RGBA, not interlaced (what Chromium's --screenshot writes). node:zlib
// inflates the IDAT stream; the five PNG row filters are undone here.
import { inflateSync } from "node:zlib";

export interface PngStats {
  width: number;
  height: number;
  /** Pixels whose colour is not near-white (any channel below 240). */
  nonWhite: number;
  /** Distinct colours, up to 1000. */
  colours: number;
}

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

export function pngStats(png: Buffer): PngStats {
  if (!png.subarray(0, 8).equals(SIGNATURE)) throw new Error("not a PNG");
  let off = 8;
  let width = 0;
  let height = 0;
  let channels = 0;
  const idat: Buffer[] = [];
  while (off < png.length) {
    const len = png.readUInt32BE(off);
    const type = png.toString("latin1", off + 4, off + 8);
    const data = png.subarray(off + 8, off + 8 + len);
    if (type === "IHDR") {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      const depth = data[8];
      const colourType = data[9];
      if (depth !== 8 || (colourType !== 2 && colourType !== 6) || data[12] !== 0)
        throw new Error(`unsupported PNG: depth ${depth}, colour type ${colourType}, interlace ${data[12]}`);
      channels = colourType === 6 ? 4 : 3;
    } else if (type === "IDAT") idat.push(data);
    else if (type === "IEND") break;
    off += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  let prev = Buffer.alloc(stride);
  let nonWhite = 0;
  const colours = new Set<number>();
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const row = Buffer.from(raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1)));
    for (let i = 0; i < stride; i++) {
      const a = i >= channels ? row[i - channels]! : 0;
      const b = prev[i]!;
      const c = i >= channels ? prev[i - channels]! : 0;
      let add = 0;
      if (filter === 1) add = a;
      else if (filter === 2) add = b;
      else if (filter === 3) add = (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c;
        const pa = Math.abs(p - a);
        const pb = Math.abs(p - b);
        const pc = Math.abs(p - c);
        add = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      } else if (filter !== 0) throw new Error(`bad PNG filter ${filter}`);
      row[i] = (row[i]! + add) & 0xff;
    }
    for (let x = 0; x < width; x++) {
      const r = row[x * channels]!;
      const g = row[x * channels + 1]!;
      const bl = row[x * channels + 2]!;
      if (r < 240 || g < 240 || bl < 240) nonWhite++;
      if (colours.size < 1000) colours.add((r << 16) | (g << 8) | bl);
    }
    prev = row;
  }
  return { width, height, nonWhite, colours: colours.size };
}
