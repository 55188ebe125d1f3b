// A plugin's params JSON Schema, read as form fields. It covers what plugin
// params use (schemars output: integers and numbers with bounds, strings
// with length, pattern and enum, booleans, `Option<T>` as ["T", "null"],
// lists of scalars, local `$ref`s); anything else becomes a JSON text area,
// and the server's own validation stays the authority either way.

/** Follows a local `$ref` ("#/$defs/Mode"), keeping sibling keywords. */
function resolve(schema, root, depth = 0) {
  if (!schema || typeof schema !== "object" || !schema.$ref || depth > 8) return schema ?? {};
  const path = schema.$ref.startsWith("#/") ? schema.$ref.slice(2).split("/") : null;
  let target = root;
  for (const part of path ?? []) target = target?.[part.replace(/~1/g, "/").replace(/~0/g, "~")];
  const { $ref, ...rest } = schema;
  return { ...resolve(target ?? {}, root, depth + 1), ...rest };
}

function typesOf(schema) {
  if (Array.isArray(schema.type)) return schema.type;
  return schema.type ? [schema.type] : [];
}

/** `step_ms` -> `Step ms`. */
function humanize(name) {
  const words = name.replace(/([a-z])([A-Z])/g, "$1 $2").replace(/[_-]+/g, " ").trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/**
 * One field per property, required ones first (each group in schema order).
 * A field: {name, label, description, kind, required, nullable, options, rules, default}
 * where kind is integer | number | string | enum | boolean | list | json.
 */
export function fieldsOf(schema) {
  const root = schema ?? {};
  const top = resolve(root, root);
  const required = new Set(top.required ?? []);
  const names = Object.keys(top.properties ?? {});
  names.sort((a, b) => Number(required.has(b)) - Number(required.has(a)));
  return names.map((name) => field(name, top.properties[name], required.has(name), root));
}

function field(name, raw, required, root) {
  let s = resolve(raw, root);
  let nullable = typesOf(s).includes("null");
  const branches = s.anyOf ?? s.oneOf;
  if (branches && !s.enum) {
    const resolved = branches.map((b) => resolve(b, root));
    const consts = resolved.filter((b) => "const" in b);
    if (consts.length === resolved.length) {
      s = { ...s, enum: consts.map((b) => b.const) };
    } else {
      const real = resolved.filter((b) => !typesOf(b).includes("null") || typesOf(b).length > 1);
      nullable = nullable || real.length < resolved.length;
      if (real.length === 1) s = { ...real[0], ...s, anyOf: undefined, oneOf: undefined };
    }
  }
  const base = typesOf(s).find((t) => t !== "null");
  let kind = "json";
  if (Array.isArray(s.enum)) kind = "enum";
  else if (base === "integer" || base === "number" || base === "string" || base === "boolean") kind = base;
  else if (base === "array") {
    const items = typesOf(resolve(s.items ?? {}, root)).find((t) => t !== "null");
    if (["string", "integer", "number"].includes(items)) kind = "list";
  }
  const rules = {};
  for (const key of ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength",
    "maxLength", "pattern", "minItems", "maxItems"]) {
    if (typeof s[key] === "number" || typeof s[key] === "string") rules[key] = s[key];
  }
  // schemars marks Rust's unsigned types by format; take their bounds when the schema gives none.
  const unsigned = /^uint(8|16|32)?$/.exec(s.format ?? "");
  if (unsigned && (kind === "integer" || kind === "number")) {
    rules.minimum ??= 0;
    if (unsigned[1]) rules.maximum ??= 2 ** Number(unsigned[1]) - 1;
  }
  if (kind === "list") rules.itemType = typesOf(resolve(s.items ?? {}, root)).find((t) => t !== "null");
  return {
    name,
    label: s.title && s.title !== name ? s.title : humanize(name),
    description: s.description ?? "",
    kind,
    required,
    nullable,
    options: kind === "enum" ? s.enum.filter((v) => v !== null) : null,
    rules,
    default: s.default ?? null,
  };
}

/** The bounds in words, for the hint: `1–10000`, `at least 1`, `up to 64 characters`. */
export function rulesText(f) {
  const r = f.rules;
  if (f.kind === "integer" || f.kind === "number") {
    const lo = r.minimum ?? r.exclusiveMinimum;
    let hi = r.maximum ?? r.exclusiveMaximum;
    // The bound of the integer type (u32::MAX) is no advice worth reading.
    if (hi !== undefined && hi >= 2 ** 31 - 1) hi = undefined;
    if (lo !== undefined && hi !== undefined) return `${lo}–${hi}`;
    if (lo !== undefined) return `at least ${lo}`;
    if (hi !== undefined) return `at most ${hi}`;
  }
  if (f.kind === "string" && r.maxLength !== undefined) return `up to ${r.maxLength} characters`;
  if (f.kind === "list") return "one per line";
  if (f.kind === "json") return "JSON";
  return "";
}

/**
 * Reads a control's raw value as the field's JSON value.
 * Returns {value} (undefined value = leave the property out) or {error}.
 */
export function parse(f, raw) {
  const empty = raw === "" || raw === null || raw === undefined;
  if (f.kind === "boolean") return { value: Boolean(raw) };
  if (empty) {
    if (f.required && !f.nullable) return { error: "is required" };
    return { value: f.required ? null : undefined };
  }
  switch (f.kind) {
    case "integer":
    case "number": {
      const n = Number(raw);
      if (!Number.isFinite(n)) return { error: "must be a number" };
      if (f.kind === "integer" && !Number.isInteger(n)) return { error: "must be a whole number" };
      return check(f, n);
    }
    case "enum": {
      const value = f.options.find((o) => String(o) === raw);
      return value === undefined ? { error: "is not one of the choices" } : { value };
    }
    case "string":
      return check(f, raw);
    case "list": {
      const items = raw.split("\n").map((s) => s.trim()).filter(Boolean);
      const numeric = f.rules.itemType === "integer" || f.rules.itemType === "number";
      const values = numeric ? items.map(Number) : items;
      if (numeric && values.some((v) => !Number.isFinite(v))) return { error: "every line must be a number" };
      if (f.rules.minItems !== undefined && values.length < f.rules.minItems) {
        return { error: `needs at least ${f.rules.minItems} item(s)` };
      }
      if (f.rules.maxItems !== undefined && values.length > f.rules.maxItems) {
        return { error: `takes at most ${f.rules.maxItems} item(s)` };
      }
      return { value: values };
    }
    default:
      try {
        return { value: JSON.parse(raw) };
      } catch {
        return { error: "is not valid JSON" };
      }
  }
}

function check(f, value) {
  const r = f.rules;
  if (typeof value === "number") {
    if (r.minimum !== undefined && value < r.minimum) return { error: `must be at least ${r.minimum}` };
    if (r.maximum !== undefined && value > r.maximum) return { error: `must be at most ${r.maximum}` };
    if (r.exclusiveMinimum !== undefined && value <= r.exclusiveMinimum) {
      return { error: `must be more than ${r.exclusiveMinimum}` };
    }
    if (r.exclusiveMaximum !== undefined && value >= r.exclusiveMaximum) {
      return { error: `must be less than ${r.exclusiveMaximum}` };
    }
    if (r.multipleOf && Math.abs(value / r.multipleOf - Math.round(value / r.multipleOf)) > 1e-9) {
      return { error: `must be a multiple of ${r.multipleOf}` };
    }
  } else {
    const length = [...value].length;
    if (r.minLength !== undefined && length < r.minLength) return { error: `needs at least ${r.minLength} characters` };
    if (r.maxLength !== undefined && length > r.maxLength) return { error: `takes at most ${r.maxLength} characters` };
    if (r.pattern !== undefined) {
      let re = null;
      try {
        re = new RegExp(r.pattern, "u");
      } catch {
        re = null; // a pattern JS cannot read is left to the server
      }
      if (re && !re.test(value)) return { error: `must match ${r.pattern}` };
    }
  }
  return { value };
}
