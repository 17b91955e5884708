// The port-80 servers: unknown Host names get no response; the site's name
// gets the ACME challenges and a redirect to HTTPS for everything else.
import { acmeChallengeLocation, httpsRedirectLocation } from "./locations";
import { listenLines, serverBlock } from "./syntax";
import { Listen } from "./types";

export interface HttpServerOptions {
  domain: string;
  listen: Listen;
  acmeWebroot: string;
}

export function renderHttpServers(o: HttpServerOptions): string[] {
  return [
    "# Unknown Host names on port 80: close without a response (logged: status 444).",
    ...serverBlock([[...listenLines(o.listen, o.listen.http, "default_server"), "server_name _;", "return 444;"]]),
    "",
    ...serverBlock([
      [...listenLines(o.listen, o.listen.http, ""), `server_name ${o.domain};`],
      acmeChallengeLocation(o.acmeWebroot),
      httpsRedirectLocation(o.listen.https),
    ]),
    "",
  ];
}
