// Every call of the official Replicate JavaScript client that applies here, made as a customer's
// script makes it, against BASE_URL with TOKEN (none: an anonymous visitor). Prints one JSON
// object: for each call what the caller received (values and their types) or the error it got.
// tests/stack/test_js_client.py runs it under Node and asserts on that.
import { readFileSync } from "node:fs";
import Replicate from "replicate";

const base = process.env.BASE_URL;
const token = process.env.TOKEN || undefined;
const owner = process.env.OWNER;
const image = readFileSync(process.env.IMAGE_PATH);
const dataUrl = `data:image/png;base64,${image.toString("base64")}`;
// REPLICATE_API_TOKEN is cleared by the test, so no token means no Authorization header at all.
const replicate = new Replicate({ auth: token, baseUrl: `${base}/v1` });

const results = {};

async function call(name, fn) {
  try {
    results[name] = { ok: true, value: await fn() };
  } catch (error) {
    results[name] = {
      ok: false,
      status: error.response ? error.response.status : null,
      message: String(error.message || error),
    };
  }
}

function shape(prediction) {
  return {
    id: prediction.id,
    model: prediction.model,
    version: prediction.version,
    status: prediction.status,
    output: prediction.output,
    error: prediction.error,
    created_at: prediction.created_at,
    urls: prediction.urls,
  };
}

if (process.env.MODE === "file-output") {
  // A model whose output is a file: run() hands back a FileOutput the caller reads.
  await call("run_file_output", async () => {
    const output = await replicate.run(`${owner}/upscale`, { input: { image: dataUrl, scale: 2 } });
    const bytes = new Uint8Array(await (await output.blob()).arrayBuffer());
    return { kind: output.constructor.name, url_scheme: output.url().protocol, bytes: Array.from(bytes.slice(0, 24)) };
  });
  console.log(JSON.stringify(results));
  process.exit(0);
}

await call("models_get", async () => {
  const model = await replicate.models.get(owner, "digits");
  return {
    name: model.name,
    owner: model.owner,
    run_count: model.run_count,
    cover_image_url: model.cover_image_url,
    latest_version_id: model.latest_version.id,
    latest_version_created_at: model.latest_version.created_at,
    default_example: model.default_example ? shape(model.default_example) : null,
  };
});
const version = results.models_get.ok ? results.models_get.value.latest_version_id : "none";

await call("models_list", async () => {
  const pages = [];
  for await (const page of replicate.paginate(() => replicate.models.list())) {
    pages.push(page.map((model) => model.name));
  }
  return pages;
});
await call("versions_list", async () => {
  const page = await replicate.models.versions.list(owner, "digits");
  return page.results.map((v) => ({ id: v.id, created_at: v.created_at }));
});
await call("versions_get", async () => (await replicate.models.versions.get(owner, "digits", version)).id);
await call("versions_get_unknown", async () => replicate.models.versions.get(owner, "digits", "nosuchversion"));

await call("create_by_model_wait", async () =>
  shape(await replicate.predictions.create({ model: `${owner}/digits`, input: { image: dataUrl }, wait: true })),
);
await call("create_by_version_then_wait", async () => {
  const created = await replicate.predictions.create({ version, input: { image: dataUrl } });
  const done = await replicate.wait(created, { interval: 50 });
  return { created: shape(created), done: shape(done) };
});
const mine = results.create_by_model_wait.ok ? results.create_by_model_wait.value.id : "none";
await call("predictions_get", async () => shape(await replicate.predictions.get(mine)));
await call("predictions_cancel", async () => shape(await replicate.predictions.cancel(mine)));
await call("predictions_list", async () => {
  const page = await replicate.predictions.list();
  return { next: page.next, previous: page.previous, ids: page.results.map((p) => p.id) };
});
await call("predictions_paginate", async () => {
  const ids = [];
  for await (const page of replicate.paginate(replicate.predictions.list)) {
    ids.push(...page.map((p) => p.id));
  }
  return ids;
});
await call("predictions_get_unknown", async () => replicate.predictions.get("nosuchpredictionid"));

await call("files_create", async () => {
  const file = await replicate.files.create(image, { purpose: "test" });
  return { id: file.id, size: file.size, metadata: file.metadata, sha256: file.checksums.sha256, get: file.urls.get };
});
const fileId = results.files_create.ok ? results.files_create.value.id : "none";
await call("files_get", async () => (await replicate.files.get(fileId)).id);
await call("files_list", async () => (await replicate.files.list()).results.map((f) => f.id));
await call("files_delete", async () => replicate.files.delete(fileId));
await call("files_get_deleted", async () => replicate.files.get(fileId));

// A Buffer input: uploaded through POST /v1/files first (the client's default strategy).
await call("run_with_buffer", async () => replicate.run(`${owner}/digits`, { input: { image } }));
await call("run_with_version", async () => replicate.run(`${owner}/digits:${version}`, { input: { image: dataUrl } }));
// A data URL string runs anywhere, anonymously too. (1.4.0's fileEncodingStrategy "data-uri" cannot
// serve instead: it encodes the client object rather than the inputs.)
await call("run_data_url", async () => replicate.run(`${owner}/digits`, { input: { image: dataUrl } }));

await call("trainings_list", async () => replicate.trainings.list());
await call("deployments_list", async () => replicate.deployments.list());
await call("hardware_list", async () => replicate.hardware.list());
await call("collections_list", async () => replicate.collections.list());
await call("models_create", async () =>
  replicate.models.create(owner, "newmodel", { visibility: "public", hardware: "cpu" }),
);
await call("stream", async () => {
  for await (const event of replicate.stream(`${owner}/digits`, { input: { image: dataUrl } })) {
    return String(event);
  }
  return null;
});

console.log(JSON.stringify(results));
