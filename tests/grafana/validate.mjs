// node validate.mjs DASHBOARD.json...: checks each file against Grafana's own types (types.ts, turned into
// a JSON schema by ts-json-schema-generator, checked by ajv): the dashboard as a whole, then each panel's
// options against its panel type's Options. An unknown key anywhere they type is an error. Prints one
// JSON object, {file: [error, ...]}; exits 1 if any file has an error.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import Ajv from "ajv";
import { createGenerator } from "ts-json-schema-generator";

const here = fileURLToPath(new URL(".", import.meta.url));
const schema = createGenerator({ path: `${here}types.ts`, type: "*", skipTypeCheck: true, expose: "export" })
  .createSchema("*");
const ajv = new Ajv({ allErrors: true, strict: false });
ajv.addSchema(schema, "grafana");
const check = (name) => ajv.getSchema(`grafana#/definitions/${name}`);
const dashboard = check("Dashboard");
const panelOptions = { timeseries: check("TimeseriesOptions"), stat: check("StatOptions") };

const say = (errors, where) => (errors ?? []).map((e) => `${where}${e.instancePath} ${e.message}${
  e.params?.additionalProperty ? `: ${e.params.additionalProperty}` : ""}${
  e.params?.allowedValues ? `: ${e.params.allowedValues.join(", ")}` : ""}`);

const report = {};
for (const file of process.argv.slice(2)) {
  const d = JSON.parse(readFileSync(file, "utf8"));
  const errors = dashboard(d) ? [] : say(dashboard.errors, "");
  (d.panels ?? []).forEach((p, i) => {
    const options = panelOptions[p.type];
    if (!options) errors.push(`/panels/${i} type ${p.type}: no Grafana options type for it in types.ts`);
    else if (!options(p.options ?? {})) errors.push(...say(options.errors, `/panels/${i}/options`));
  });
  report[file] = errors;
}
console.log(JSON.stringify(report, null, 1));
process.exit(Object.values(report).some((e) => e.length) ? 1 : 0);
