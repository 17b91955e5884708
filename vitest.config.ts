import { defineConfig } from "vitest/config";

// Unit tests are fast and hermetic; live tests start real processes (nginx,
// uvicorn, certbot, wrk) on 127.0.0.1 and run one file at a time so their
// ports and CPU use never collide on a 2-core machine.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    exclude: ["node_modules/**", "policy/**"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    fileParallelism: false,
    reporters: ["default"],
  },
});
