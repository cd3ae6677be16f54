// Renders the Braze-dialect cases with brazejs (npm), the open-source engine that implements
// part of Braze's Liquid, and prints {"case": output}. Usage: node brazejs_render.js CASES_JSON
const fs = require('fs');
const Liquid = require('brazejs');
const { vars, cases } = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const engine = new Liquid();
(async () => {
  const out = {};
  for (const [name, template] of Object.entries(cases)) {
    try {
      out[name] = await engine.parseAndRender(template, JSON.parse(JSON.stringify(vars)));
    } catch (e) {
      out[name] = 'ERROR ' + e.message;
    }
  }
  console.log(JSON.stringify(out));
})();
