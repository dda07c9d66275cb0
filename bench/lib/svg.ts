/**
 * The README chart: TCP throughput LAN to LAN per VPN, one and four
 * streams, as horizontal bars with the ratio to the reference. Hand-written
 * SVG so the chart needs nothing but a browser.
 */

export interface ChartRow {
  name: string;
  version: string;
  tcp1Mbps: number;
  tcp4Mbps: number;
}

function esc(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const pow = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * pow >= v) return m * pow;
  return 10 * pow;
}

export function renderThroughputSvg(rows: readonly ChartRow[], reference: string, subtitle: string): string {
  const colors = { tcp1: '#2b6cb0', tcp4: '#90cdf4' };
  const labelW = 170;
  const plotW = 460;
  const rightW = 110;
  const barH = 14;
  const groupH = 2 * barH + 14;
  const top = 62;
  const width = labelW + plotW + rightW;
  const height = top + rows.length * groupH + 40;
  const max = niceMax(Math.max(...rows.map((r) => Math.max(r.tcp1Mbps || 0, r.tcp4Mbps || 0))));
  const ref = rows.find((r) => r.name === reference);
  const x = (v: number): number => labelW + (plotW * Math.max(0, v || 0)) / max;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="-apple-system, Segoe UI, Helvetica, Arial, sans-serif" font-size="12">`,
  );
  out.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(`<text x="12" y="20" font-size="15" font-weight="bold" fill="#1a202c">iperf3 TCP, LAN A to LAN B through each VPN (Mbit/s)</text>`);
  out.push(`<text x="12" y="38" fill="#4a5568">${esc(subtitle)}</text>`);
  out.push(`<rect x="${labelW}" y="46" width="10" height="10" fill="${colors.tcp1}"/><text x="${labelW + 14}" y="55" fill="#1a202c">1 stream</text>`);
  out.push(`<rect x="${labelW + 90}" y="46" width="10" height="10" fill="${colors.tcp4}"/><text x="${labelW + 104}" y="55" fill="#1a202c">4 streams</text>`);
  // Grid.
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    const gx = x(v);
    out.push(`<line x1="${gx.toFixed(1)}" y1="${top - 4}" x2="${gx.toFixed(1)}" y2="${height - 30}" stroke="#e2e8f0"/>`);
    out.push(`<text x="${gx.toFixed(1)}" y="${height - 16}" text-anchor="middle" fill="#718096">${Math.round(v)}</text>`);
  }
  rows.forEach((r, i) => {
    const y = top + i * groupH;
    const bold = r.name === 'tunvpn' ? ' font-weight="bold"' : '';
    out.push(`<text x="${labelW - 8}" y="${y + barH}" text-anchor="end" fill="#1a202c"${bold}>${esc(r.name)}</text>`);
    out.push(`<text x="${labelW - 8}" y="${y + 2 * barH + 2}" text-anchor="end" fill="#718096" font-size="10">${esc(r.version)}</text>`);
    for (const [k, v, dy] of [
      ['tcp1', r.tcp1Mbps, 0],
      ['tcp4', r.tcp4Mbps, barH + 2],
    ] as const) {
      const w = Math.max(0, x(v) - labelW);
      out.push(
        `<rect x="${labelW}" y="${y + dy}" width="${w.toFixed(1)}" height="${barH}" fill="${colors[k]}"><title>${esc(`${r.name}, ${k === 'tcp1' ? '1 stream' : '4 streams'}: ${v.toFixed(0)} Mbit/s`)}</title></rect>`,
      );
      const refV = ref ? (k === 'tcp1' ? ref.tcp1Mbps : ref.tcp4Mbps) : Number.NaN;
      const ratio = refV > 0 && Number.isFinite(v) ? ` (${(v / refV).toFixed(2)}x)` : '';
      const text = Number.isFinite(v) ? `${v.toFixed(0)}${ratio}` : 'n/a';
      out.push(`<text x="${(labelW + w + 4).toFixed(1)}" y="${y + dy + barH - 3}" fill="#2d3748" font-size="11">${esc(text)}</text>`);
    }
  });
  out.push(`<text x="${width - 12}" y="${height - 4}" text-anchor="end" fill="#a0aec0" font-size="10">ratios against ${esc(reference)} in the same run</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}
