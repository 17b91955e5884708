// What HTTP/3 and the post-quantum group cost on the wire and in time, on
// 127.0.0.1 (`npx tsx bench/tls-edge.ts [--rounds N]`; needs root for the
// chroots). The site is rendered with http3 on for Debian 13 and served by
// the edge-trixie chroot's nginx 1.26 (OpenSSL 3.5), the sample app behind it.
//
//   - handshake bytes: `openssl s_client` (OpenSSL 3.5, from the chroot) with
//     only X25519MLKEM768, then only X25519: "SSL handshake has read R bytes
//     and written W bytes";
//   - fresh-connection request time: N curl runs each (new connection every
//     time, from the chroot: curl 8.14), HTTP/2 over TCP against HTTP/3 over
//     QUIC, interleaved; medians of time_total (and of time_appconnect, which
//     curl 8.14's OpenSSL QUIC stack does not report reliably for h3: from
//     0.04 ms to 3.5 ms medians between runs). Loopback has no round trips to save, so this measures CPU
//     per handshake and request, not the latency gain on a real network;
//   - one connection, many requests: curl with a URL range (500 requests on
//     one connection, checked: only the first connects), h2 against h3, wall
//     time of the whole curl run, median of 5.
//
// Prints a Markdown table; nothing is written.
import { getChroot, inChroot, startChrootSite } from "../test/helpers/chroot-site";

const rounds = Number(process.argv[process.argv.indexOf("--rounds") + 1] ?? "") || 30;
const REUSE_REQUESTS = 500;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function main(): Promise<void> {
  const root = getChroot("trixie");
  const site = await startChrootSite(root, { config: { http3: true } });
  try {
    const rows: string[] = [];
    for (const group of ["X25519MLKEM768", "X25519"]) {
      const r = inChroot(root, [
        "openssl",
        "s_client",
        "-connect",
        `127.0.0.1:${site.httpsPort}`,
        "-servername",
        site.domain,
        "-CAfile",
        site.caInside,
        "-groups",
        group,
      ]);
      const m = /SSL handshake has read ([0-9]+) bytes and written ([0-9]+) bytes/.exec(r.stdout);
      // OpenSSL 3.5 prints "Negotiated TLS1.3 group" for the hybrid, "Peer Temp Key" for an ECDH group.
      const neg = /Negotiated TLS1\.3 group: (\S+)/.exec(r.stdout)?.[1] ?? /Peer Temp Key: ([^,\n]+)/.exec(r.stdout)?.[1] ?? "?";
      rows.push(`| TLS 1.3 handshake, group ${group} (negotiated ${neg}) | read ${m?.[1] ?? "?"} B, written ${m?.[2] ?? "?"} B |`);
    }
    const times: Record<string, { connect: number[]; total: number[] }> = {
      h2: { connect: [], total: [] },
      h3: { connect: [], total: [] },
    };
    for (let i = 0; i < rounds; i++) {
      for (const [name, flag] of [
        ["h2", "--http2"],
        ["h3", "--http3-only"],
      ] as const) {
        const r = inChroot(root, [
          "curl",
          "-sS",
          "-o",
          "/dev/null",
          flag,
          "--resolve",
          `${site.domain}:${site.httpsPort}:127.0.0.1`,
          "--cacert",
          site.caInside,
          "-w",
          "%{http_version} %{time_appconnect} %{time_total}",
          `https://${site.domain}:${site.httpsPort}/api/hello`,
        ]);
        const [v, connect, total] = r.stdout.trim().split(" ");
        if (r.status !== 0 || v !== name.slice(1)) throw new Error(`${name}: curl exit ${r.status}, version ${v}: ${r.stderr}`);
        times[name]!.connect.push(Number(connect) * 1000);
        times[name]!.total.push(Number(total) * 1000);
      }
    }
    // One connection, many requests: curl reuses the connection across a URL range.
    const reuse: Record<string, number[]> = { h2: [], h3: [] };
    for (let i = 0; i < 5; i++) {
      for (const [name, flag] of [
        ["h2", "--http2"],
        ["h3", "--http3-only"],
      ] as const) {
        const t0 = process.hrtime.bigint();
        const argv = [
          "curl",
          "-sS",
          "-o",
          "/dev/null",
          flag,
          "--resolve",
          `${site.domain}:${site.httpsPort}:127.0.0.1`,
          "--cacert",
          site.caInside,
          "-w",
          "%{http_version}%{num_connects}\n",
          `https://${site.domain}:${site.httpsPort}/api/hello?n=[1-${REUSE_REQUESTS}]`,
        ];
        let r: ReturnType<typeof inChroot>;
        try {
          r = inChroot(root, argv, { timeoutMs: 120_000 });
        } catch (e) {
          throw new Error(`${name}: ${REUSE_REQUESTS} requests on one connection, run ${i + 1}: ${(e as Error).message}`);
        }
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        const lines = r.stdout.trim().split("\n");
        // Every response on the expected version, and only the first needed a new connection.
        const v = name.slice(1);
        if (r.status !== 0 || lines.length !== REUSE_REQUESTS || lines[0] !== `${v}1` || lines.slice(1).some((l) => l !== `${v}0`)) {
          throw new Error(`${name} reuse run: exit ${r.status}, ${lines.length} lines, first ${lines[0]}: ${r.stderr.slice(-500)}`);
        }
        reuse[name]!.push(ms);
      }
    }
    for (const name of ["h2", "h3"]) {
      const t = times[name]!;
      rows.push(
        `| ${name === "h2" ? "HTTP/2 over TCP" : "HTTP/3 over QUIC"}, new connection per request (${rounds} runs, median) | response ${median(t.total).toFixed(2)} ms (curl's time_appconnect: ${median(t.connect).toFixed(2)} ms) |`,
      );
    }
    for (const name of ["h2", "h3"]) {
      const m = median(reuse[name]!);
      rows.push(
        `| ${name === "h2" ? "HTTP/2 over TCP" : "HTTP/3 over QUIC"}, ${REUSE_REQUESTS} requests on one connection (5 runs, median) | ${m.toFixed(0)} ms (${((m / REUSE_REQUESTS) * 1000).toFixed(0)} us per request) |`,
      );
    }
    console.log(
      `nginx 1.26 (edge-trixie), ${new Date().toISOString().slice(0, 10)}\n\n| measurement | result |\n| --- | --- |\n${rows.join("\n")}`,
    );
  } finally {
    await site.stop();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
