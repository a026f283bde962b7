// A real TypeScript MCP SDK client (@modelcontextprotocol/sdk, pinned in .ci/run) driving `sms-mcp` over stdio,
// for tests/test_hosts_clients.py. The Python test sends one JSON command per stdin line and reads one JSON
// answer per stdout line, so the assertions live in Python and the protocol work is done by the TS SDK:
//   {"call": "<tool>", "arguments": {...}}     -> {"ok": true, "isError": bool, "structured": ..., "text": "..."}
//   {"elicit": "accept" | "decline" | "cancel", "content": {...}}  sets how the "human" answers elicitations
//   {"peek": true}                              -> only the elicitations seen so far
//   {"close": true}                             -> closes the client (and so the server's stdin)
// Every answer carries "elicitations": the messages of the elicitation requests seen so far.
// Usage: node ts_sdk_client.cjs <node_modules dir holding the SDK> <server command> [args...]
// (environment for the server: the JSON object in SMS_MCP_SERVER_ENV).
"use strict";

const { createRequire } = require("node:module");
const path = require("node:path");
const readline = require("node:readline");

const [nodeModules, command, ...args] = process.argv.slice(2);
const sdk = createRequire(path.join(path.resolve(nodeModules), "noop.js"));
const { Client } = sdk("@modelcontextprotocol/sdk/client/index.js");
const { StdioClientTransport } = sdk("@modelcontextprotocol/sdk/client/stdio.js");
const { ElicitRequestSchema } = sdk("@modelcontextprotocol/sdk/types.js");
// The package's "exports" hide its package.json; read it next to the resolved client module (dist/cjs/client/).
const sdkRoot = path.resolve(path.dirname(sdk.resolve("@modelcontextprotocol/sdk/client/index.js")), "../../..");
const sdkVersion = JSON.parse(require("node:fs").readFileSync(path.join(sdkRoot, "package.json"), "utf8")).version;

function reply(answer) {
  process.stdout.write(JSON.stringify({ ...answer, elicitations }) + "\n");
}

const elicitations = [];
let human = { action: "cancel" };

async function main() {
  const env = JSON.parse(process.env.SMS_MCP_SERVER_ENV || "{}");
  const transport = new StdioClientTransport({ command, args, env, stderr: "inherit" });
  const client = new Client({ name: "sms-mcp-ts-sdk-test", version: "1.0.0" },
                            { capabilities: { elicitation: { form: {} } } });
  client.setRequestHandler(ElicitRequestSchema, async (request) => {
    elicitations.push(request.params.message);
    return human.action === "accept" ? { action: "accept", content: human.content || {} } : { action: human.action };
  });
  await client.connect(transport);
  const info = client.getServerVersion();
  reply({ ready: true, sdk: sdkVersion, server: info });

  const lines = readline.createInterface({ input: process.stdin, terminal: false });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const command = JSON.parse(line);
    try {
      if (command.close) {
        await client.close();
        process.stdout.write(JSON.stringify({ ok: true, closed: true, elicitations }) + "\n", () => process.exit(0));
        return;
      }
      if (command.peek) {
        reply({ ok: true });
        continue;
      }
      if (command.elicit) {
        human = { action: command.elicit, content: command.content };
        reply({ ok: true });
        continue;
      }
      const result = await client.callTool({ name: command.call, arguments: command.arguments || {} });
      const text = (result.content || []).filter((c) => c.type === "text").map((c) => c.text).join("\n");
      reply({ ok: true, isError: Boolean(result.isError), structured: result.structuredContent ?? null, text });
    } catch (err) {
      reply({ ok: false, error: String(err && err.message ? err.message : err) });
    }
  }
  await client.close();
}

main().catch((err) => {
  process.stdout.write(JSON.stringify({ ok: false, fatal: String(err && err.stack ? err.stack : err) }) + "\n");
  process.exit(1);
});
