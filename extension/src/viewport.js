// Zoom (wheel, buttons) and pan (drag) of one <g> inside an <svg>, by a transform attribute.
// Far zoom hides edge labels and secondary text (class wb-far) so 1,000+ node graphs stay fast.

export class Viewport {
  constructor(svg, root, canvas) {
    Object.assign(this, { svg, root, canvas, x: 0, y: 0, k: 1, w: 1, h: 1, dragged: false });
    this.onWheel = (ev) => {
      ev.preventDefault();
      const r = this.svg.getBoundingClientRect();
      this.zoomBy(Math.exp(-ev.deltaY * 0.0015), ev.clientX - r.left, ev.clientY - r.top);
    };
    this.onDown = (ev) => {
      if (ev.button !== 0) return;
      this.drag = { sx: ev.clientX, sy: ev.clientY, x: this.x, y: this.y };
      this.dragged = false;
    };
    this.onMove = (ev) => {
      if (!this.drag) return;
      const dx = ev.clientX - this.drag.sx, dy = ev.clientY - this.drag.sy;
      if (Math.abs(dx) + Math.abs(dy) > 3) { this.dragged = true; this.canvas.classList.add("dragging"); }
      if (this.dragged) { this.x = this.drag.x + dx; this.y = this.drag.y + dy; this.apply(); }
    };
    this.onUp = () => {
      this.drag = null;
      this.canvas.classList.remove("dragging");
      setTimeout(() => { this.dragged = false; }, 0); // let the click handler see it first
    };
    // A view drawn while hidden (a background tab) has no size; fit once it gets one.
    this.resize = new ResizeObserver(() => {
      const [w, h] = this.size(true);
      if (w > 0 && h > 0 && this.unsized) { this.unsized = false; this.fit(); }
    });
    this.resize.observe(canvas);
    svg.addEventListener("wheel", this.onWheel, { passive: false });
    svg.addEventListener("pointerdown", this.onDown);
    window.addEventListener("pointermove", this.onMove);
    window.addEventListener("pointerup", this.onUp);
  }

  setContent(w, h) { this.w = Math.max(w, 1); this.h = Math.max(h, 1); }

  size(raw = false) {
    const r = this.svg.getBoundingClientRect();
    if (raw) return [r.width, r.height];
    if (!r.width || !r.height) this.unsized = true;
    return [r.width || 800, r.height || 560];
  }

  // Whole graph if it is readable that way; else fit the width and start at the top (tall graphs).
  fit() {
    const [cw, ch] = this.size();
    let k = Math.min(1, (cw - 20) / this.w, (ch - 20) / this.h);
    if (k < 0.3) k = Math.min(1, (cw - 20) / this.w);
    this.k = k;
    this.x = (cw - this.w * k) / 2;
    this.y = Math.max(10, (ch - this.h * k) / 2);
    if (this.h * k > ch) this.y = 10;
    this.apply();
  }

  zoomBy(f, px, py) {
    const [cw, ch] = this.size();
    px = px ?? cw / 2; py = py ?? ch / 2;
    const k = Math.min(4, Math.max(0.02, this.k * f));
    this.x = px - ((px - this.x) * k) / this.k;
    this.y = py - ((py - this.y) * k) / this.k;
    this.k = k;
    this.apply();
  }

  centerOn(rect) {
    if (!rect) return;
    const [cw, ch] = this.size();
    const bx = +rect.getAttribute("x") + +rect.getAttribute("width") / 2;
    const by = +rect.getAttribute("y") + +rect.getAttribute("height") / 2;
    this.k = Math.max(this.k, 0.8);
    this.x = cw / 2 - bx * this.k;
    this.y = ch / 2 - by * this.k;
    this.apply();
  }

  apply() {
    this.root.setAttribute("transform", `translate(${this.x.toFixed(1)},${this.y.toFixed(1)}) scale(${this.k.toFixed(4)})`);
    this.canvas.classList.toggle("wb-far", this.k < 0.55);
  }

  dispose() {
    this.resize.disconnect();
    this.svg.removeEventListener("wheel", this.onWheel);
    this.svg.removeEventListener("pointerdown", this.onDown);
    window.removeEventListener("pointermove", this.onMove);
    window.removeEventListener("pointerup", this.onUp);
  }
}
