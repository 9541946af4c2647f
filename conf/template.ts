// conf/template.ts: the template syntax allowed in selector values (`destination_selector: { node: "{{.nodeName}}" }`).
//
// Needs: nothing. Used by conf/networkservice.ts (rejects a malformed template at apply time, not at the
// first request) and by agent/select (renders the value with the client's labels).
// Contract: the Go text/template subset NSM users write in selectors: `{{.key}}` (key an identifier) and
// `{{index . "any/label.key"}}`, with optional spaces inside the braces; everything else is literal text.
// A reference to a label the client does not have is reported as missing, never rendered as "" or
// "<no value>": a selector that depends on an absent label cannot match.

export type TemplatePart = { literal: string } | { ref: string }

const REF = /^\s*(?:\.([A-Za-z_][A-Za-z0-9_]*)|index\s+\.\s+"((?:[^"\\]|\\.)*)")\s*$/

/** Splits a selector value into literal text and label references; throws Error on a malformed `{{ }}`. */
export function parseTemplate(value: string): TemplatePart[] {
  const parts: TemplatePart[] = []
  let pos = 0
  while (pos < value.length) {
    const open = value.indexOf('{{', pos)
    if (open < 0) {
      if (value.includes('}}', pos)) throw new Error(`unbalanced "}}" in ${JSON.stringify(value)}`)
      parts.push({ literal: value.slice(pos) })
      break
    }
    if (open > pos) {
      if (value.slice(pos, open).includes('}}')) throw new Error(`unbalanced "}}" in ${JSON.stringify(value)}`)
      parts.push({ literal: value.slice(pos, open) })
    }
    const close = value.indexOf('}}', open + 2)
    if (close < 0) throw new Error(`unterminated "{{" in ${JSON.stringify(value)}`)
    const m = REF.exec(value.slice(open + 2, close))
    if (m === null) {
      throw new Error(
        `unsupported template ${JSON.stringify(value.slice(open, close + 2))}: use {{.label}} or {{index . "label/key"}}`,
      )
    }
    const ref = m[1] ?? JSON.parse(`"${m[2] ?? ''}"`) as string
    parts.push({ ref })
    pos = close + 2
  }
  return parts
}

/** True when the value contains template syntax (and so depends on the client's labels). */
export function isTemplate(value: string): boolean {
  return value.includes('{{')
}

export type RenderResult = { ok: true; value: string } | { ok: false; missing: string[] }

/** Renders a selector value with the client's labels; a malformed template renders as an error, not a throw. */
export function renderTemplate(value: string, vars: Readonly<Record<string, string>>): RenderResult {
  if (!isTemplate(value)) return { ok: true, value }
  let parts: TemplatePart[]
  try {
    parts = parseTemplate(value)
  } catch {
    // Validated documents never get here; an unvalidated one must not match by accident.
    return { ok: false, missing: [value] }
  }
  let out = ''
  const missing: string[] = []
  for (const p of parts) {
    if ('literal' in p) out += p.literal
    else if (Object.hasOwn(vars, p.ref)) out += vars[p.ref]
    else missing.push(p.ref)
  }
  return missing.length === 0 ? { ok: true, value: out } : { ok: false, missing }
}
