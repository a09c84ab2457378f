// Runs exported TF.js graph models with the real TF.js for tests/test_export_tfjs.py (Node >= 18).
//
//   node run.js predict JOB.json   JOB: {"model": folder, "runs": [{"input": f32 file, "shape": [1, h, w, 3],
//                                  "output": f32 file}], "repeat": n (optional, timing),
//                                  "backend": "cpu" (default) | "wasm"};
//                                  prints {"tfjs", "backend", "shapes", "metadata", "ms": [median per run]}
//   node run.js ops                prints {"converter": [TF op names the converter maps],
//                                  "kernels": {"cpu"|"webgl"|"webgpu"|"wasm": [kernel names]}}
//
// The model is loaded through tf.io.http with a fetch that reads the folder from disk: the same
// model.json parsing, shard concatenation and float16 dequantisation a browser runs.
'use strict';

const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

function fileFetch(folder) {
  return async (url) => {
    const file = path.join(folder, path.basename(new URL(url, 'http://model/').pathname));
    const body = fs.readFileSync(file);
    const type = file.endsWith('.json') ? 'application/json' : 'application/octet-stream';
    return new Response(body, {status: 200, headers: {'Content-Type': type}});
  };
}

async function predict(jobFile) {
  const job = JSON.parse(fs.readFileSync(jobFile, 'utf8'));
  const backend = job.backend || 'cpu';
  if (backend === 'wasm') require('@tensorflow/tfjs-backend-wasm');  // its .wasm files load from node_modules
  if (!(await tf.setBackend(backend))) throw new Error(`TF.js backend ${backend} failed to initialise`);
  await tf.ready();
  const handler = tf.io.http('http://model/model.json', {fetchFunc: fileFetch(job.model)});
  const model = await tf.loadGraphModel(handler);
  const shapes = [];
  const ms = [];
  for (const run of job.runs) {
    const bytes = fs.readFileSync(run.input);
    const values = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    const input = tf.tensor(values, run.shape, 'float32');
    const output = model.execute({lq: input}, 'sr');
    const data = await output.data();
    fs.writeFileSync(run.output, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    shapes.push(output.shape);
    tf.dispose(output);
    const times = [];
    for (let i = 0; i < (job.repeat || 0); i++) {  // after the first run (the warm-up)
      const start = process.hrtime.bigint();
      const timed = model.execute({lq: input}, 'sr');
      await timed.data();
      times.push(Number(process.hrtime.bigint() - start) / 1e6);
      tf.dispose(timed);
    }
    times.sort((a, b) => a - b);
    ms.push(times.length ? times[Math.floor(times.length / 2)] : null);
    tf.dispose(input);
  }
  return {tfjs: tf.version.tfjs, backend: tf.getBackend(), shapes, metadata: model.metadata, ms};
}

function converterOps() {
  // The converter's op mappers (dist/operations/op_list/*.js), the list the `tensorflowjs` converter checks.
  const folder = path.join(path.dirname(require.resolve('@tensorflow/tfjs-converter/package.json')),
                           'dist', 'operations', 'op_list');
  const names = new Set();
  for (const file of fs.readdirSync(folder).filter((f) => f.endsWith('.js'))) {
    const text = fs.readFileSync(path.join(folder, file), 'utf8');
    for (const match of text.matchAll(/['"]tfOpName['"]\s*:\s*['"]([^'"]+)['"]/g)) names.add(match[1]);
  }
  return [...names].sort();
}

function backendKernels() {
  // Importing a backend package registers its kernels; no GPU or WASM binary is needed to list them.
  require('@tensorflow/tfjs-backend-wasm');
  require('@tensorflow/tfjs-backend-webgpu');
  const kernels = {};
  for (const backend of ['cpu', 'webgl', 'webgpu', 'wasm']) {
    kernels[backend] = tf.getKernelsForBackend(backend).map((k) => k.kernelName).sort();
  }
  return kernels;
}

async function main() {
  const [mode, arg] = process.argv.slice(2);
  let result;
  if (mode === 'predict') result = await predict(arg);
  else if (mode === 'ops') result = {converter: converterOps(), kernels: backendKernels()};
  else throw new Error(`unknown mode ${mode}; use predict JOB.json or ops`);
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
