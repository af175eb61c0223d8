// Drives a gpve node's gRPC API from Node.js: @grpc/grpc-js, with the .proto files loaded at run time by
// @grpc/proto-loader (no generated code). The flow of the Python client: create a guest with one disk,
// watch its status, start it, stop it, delete it; then ask for a guest that does not exist.
// Usage: node grpc_client.mjs PORT CA_FILE PROTO_DIR TICKET CSRF_TOKEN KERNEL_ARGS
import fs from "node:fs";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const [port, caFile, protoDir, ticket, csrf, kernelArgs] = process.argv.slice(2);
setTimeout(() => { console.error("timed out"); process.exit(2); }, 240000).unref();

const definition = protoLoader.loadSync(["gpve/v1/guest.proto", "gpve/v1/operation.proto"],
  { includeDirs: [protoDir], keepCase: true, longs: Number, enums: String, defaults: true });
const gpve = grpc.loadPackageDefinition(definition).gpve.v1;
const credentials = grpc.credentials.createSsl(fs.readFileSync(caFile));
const guests = new gpve.GuestService(`127.0.0.1:${port}`, credentials);
const operations = new gpve.OperationService(`127.0.0.1:${port}`, credentials);
const metadata = new grpc.Metadata();
metadata.set("authorization", `PVEAuthCookie=${ticket}`);
metadata.set("csrfpreventiontoken", csrf);

const call = (client, method, request) => new Promise((resolve, reject) =>
  client[method](request, metadata, (err, response) => (err ? reject(err) : resolve(response))));

async function done(operation) {
  const ended = await call(operations, "Wait", { upid: operation.upid, timeout: { seconds: 120 } });
  if (ended.status !== "OPERATION_STATUS_OK") throw new Error(`${ended.type} ended ${ended.exit_status}`);
  return ended;
}

const out = { states: [], eventIds: [] };
const created = await call(guests, "Create", {
  name: "from-node", cores: 1, memory: 256, disks: [{ storage: "local", size: "1G" }],
  options: { kvm: "0", args: kernelArgs },
});
out.vmid = created.vmid;
out.createType = (await done(created.operation)).type;

const stream = guests.WatchStatus({ vmid: created.vmid }, metadata);
const queue = [];
let wake = null;
stream.on("data", (status) => {
  out.states.push(status.state);
  out.eventIds.push(status.event_id);
  queue.push(status);
  if (wake) { wake(); wake = null; }
});
const ended = new Promise((resolve, reject) => { stream.on("end", resolve); stream.on("error", reject); });
async function next() {
  while (!queue.length) await new Promise((resolve) => { wake = resolve; });
  return queue.shift();
}

await next(); // the current state
await done(await call(guests, "Start", { vmid: created.vmid }));
await next();
out.running = await call(guests, "Get", { vmid: created.vmid });
await done(await call(guests, "Stop", { vmid: created.vmid }));
await next();
await done((await call(guests, "Delete", { vmid: created.vmid })).operation);
await next();
await ended; // the stream ends after the deletion
try {
  await call(guests, "Get", { vmid: created.vmid });
} catch (err) {
  out.afterDelete = { code: err.code, isNotFound: err.code === grpc.status.NOT_FOUND, details: err.details };
}
out.running = { state: out.running.state, node: out.running.node, pid: out.running.pid, disk: out.running.config.scsi0 };
console.log(JSON.stringify(out));
process.exit(0);
