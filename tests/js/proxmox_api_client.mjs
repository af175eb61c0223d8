// Drives a gpve node with the npm `proxmox-api` client, unchanged: password login, token login,
// listing guests and starting one. Usage: node proxmox_api_client.mjs PORT PASSWORD TOKENID SECRET VMID
import proxmoxApi from "proxmox-api";

process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";
const [port, password, tokenID, tokenSecret, vmid] = process.argv.slice(2);
const out = {};

const withPassword = proxmoxApi({ host: "127.0.0.1", port: Number(port), username: "root@pam", password });
out.version = (await withPassword.version.$get()).version;
out.nodes = (await withPassword.nodes.$get()).map((n) => n.node);
out.guests = (await withPassword.nodes.$("n1").qemu.$get({ full: true })).map((g) => g.vmid);
out.startUpid = await withPassword.nodes.$("n1").qemu.$(Number(vmid)).status.start.$post();

const withToken = proxmoxApi({ host: "127.0.0.1", port: Number(port), tokenID, tokenSecret });
out.tokenGuests = (await withToken.cluster.resources.$get({ type: "vm" })).map((r) => r.vmid);
out.tokenConfigName = (await withToken.nodes.$("n1").qemu.$(Number(vmid)).config.$get()).name;

console.log(JSON.stringify(out));
