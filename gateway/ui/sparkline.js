// Tiny canvas sparkline: a fixed-length price history drawn as a line with a
// soft fill, green when the window trends up, red when down.

export const SPARK_POINTS = 60;
// One point per bucket (the last price in it), so 60 points show the last 30 s whatever the tick rate.
export const SPARK_BUCKET_MS = 500;

/**
 * Keeps `canvas`'s backing store at `w` x `h` CSS pixels times devicePixelRatio, remembering the size in
 * `owner.w`, `owner.h` and `owner.dpr`. Returns true when it resized (which resets the context's state).
 */
export function fitCanvas(owner, canvas, w, h) {
  const dpr = window.devicePixelRatio || 1;
  if (w === owner.w && h === owner.h && dpr === owner.dpr) return false;
  owner.w = w;
  owner.h = h;
  owner.dpr = dpr;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  return true;
}

export class Sparkline {
  constructor(canvas, points = SPARK_POINTS) {
    this.canvas = canvas;
    this.points = points;
    this.values = [];
    this.bucketStart = -Infinity;
    this.ctx = canvas.getContext('2d');
    this.w = 0;
    this.h = 0;
    this.dpr = 0;
    // The CSS size as the last layout left it. Reading clientWidth in draw()
    // would force a synchronous layout after every row's text writes.
    this.cssW = 0;
    this.cssH = 0;
    this.observer = new ResizeObserver(([e]) => {
      this.cssW = e.contentRect.width;
      this.cssH = e.contentRect.height;
    });
    this.observer.observe(canvas);
  }

  /** Stops watching the canvas's size (its row is gone). */
  dispose() {
    this.observer.disconnect();
  }

  push(v, nowMs = performance.now()) {
    if (!Number.isFinite(v)) return;
    if (this.values.length > 0 && nowMs - this.bucketStart < SPARK_BUCKET_MS) {
      this.values[this.values.length - 1] = v;
      return;
    }
    this.bucketStart = nowMs;
    this.values.push(v);
    if (this.values.length > this.points) this.values.splice(0, this.values.length - this.points);
  }

  resize() {
    fitCanvas(this, this.canvas, this.cssW || 96, this.cssH || 24);
  }

  draw() {
    this.resize();
    const { ctx, w, h, values } = this;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    if (values.length < 2) return;
    let min = Infinity;
    let max = -Infinity;
    for (const v of values) {
      if (v < min) min = v;
      if (v > max) max = v;
    }
    const pad = 2;
    const span = max - min || 1;
    const step = (w - pad * 2) / (this.points - 1);
    const x0 = w - pad - step * (values.length - 1); // newest point at the right edge
    const y = (v) => (max === min ? h / 2 : pad + (h - pad * 2) * (1 - (v - min) / span));
    const up = values[values.length - 1] >= values[0];
    const stroke = up ? '#22c55e' : '#ef4444';

    ctx.beginPath();
    values.forEach((v, i) => {
      const px = x0 + i * step;
      if (i === 0) ctx.moveTo(px, y(v));
      else ctx.lineTo(px, y(v));
    });
    ctx.lineWidth = 1.25;
    ctx.lineJoin = 'round';
    ctx.strokeStyle = stroke;
    ctx.stroke();

    ctx.lineTo(x0 + (values.length - 1) * step, h);
    ctx.lineTo(x0, h);
    ctx.closePath();
    const grad = ctx.createLinearGradient(0, 0, 0, h);
    grad.addColorStop(0, up ? 'rgba(34,197,94,0.28)' : 'rgba(239,68,68,0.28)');
    grad.addColorStop(1, 'rgba(0,0,0,0)');
    ctx.fillStyle = grad;
    ctx.fill();

    const lx = x0 + (values.length - 1) * step;
    ctx.beginPath();
    ctx.arc(lx, y(values[values.length - 1]), 1.8, 0, Math.PI * 2);
    ctx.fillStyle = stroke;
    ctx.fill();
  }
}
