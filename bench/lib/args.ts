/** `--flag N` from the command line, clamped to [min, max] and rounded; `def` when absent or not a number. */
export function numArg(args: readonly string[], flag: string, def: number, min: number, max: number): number {
  const i = args.indexOf(flag);
  const v = i >= 0 ? Number(args[i + 1]) : def;
  return Number.isFinite(v) ? Math.min(max, Math.max(min, Math.round(v))) : def;
}
