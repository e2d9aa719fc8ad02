/** Every endpoint with every method, and paths that are not endpoints (404, or 405 where a route exists). */
import { BAD, CaseList } from "./case_list.ts";

export function routeCases(list: CaseList) {
  // Every endpoint with every method, and paths that are not endpoints.
  const paths = [
    "/generate",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/v1/models/m",
    "/model_info",
    "/get_model_info",
    "/server_info",
    "/get_server_info",
    "/get_load",
    "/health",
    "/health_generate",
    "/flush_cache",
    "/abort_request",
    "/metrics",
    "/tokenize",
    "/v1/tokenize",
    "/detokenize",
    "/v1/detokenize",
  ];
  const methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
  const bodyRoutes = new Set([
    "/generate",
    "/v1/chat/completions",
    "/v1/completions",
    "/abort_request",
    "/tokenize",
    "/v1/tokenize",
    "/detokenize",
    "/v1/detokenize",
  ]);
  const getAndPost = new Set(["/health", "/health_generate", "/flush_cache"]);
  for (const path of paths) {
    for (const method of methods) {
      let expect: number[];
      if (method === "OPTIONS") expect = [204];
      else if (path === "/flush_cache") expect = method === "GET" || method === "POST" ? [200, 400] : [405];
      else if (getAndPost.has(path)) expect = method === "GET" || method === "POST" ? [200] : [405];
      else if (bodyRoutes.has(path)) expect = method === "POST" ? BAD : [405]; // POST without a body: required fields missing
      else if (path === "/metrics") expect = method === "GET" ? [200, 404] : [405];
      else if (path === "/v1/models/m") expect = method === "GET" ? [404] : [405];
      else expect = method === "GET" ? [200] : [405];
      if (path === "/abort_request" && method === "POST") expect = BAD;
      list.request(`${method} ${path}`, method, path, expect);
    }
  }
  for (
    const path of [
      "/",
      "/v2/chat",
      "/generate/x",
      "/../etc/passwd",
      "/%00",
      "/v1/models/%E0%A4%A",
      "/v1/models/%",
      "/" + "a".repeat(8000),
      "/v1//chat/completions",
    ]
  ) {
    for (const method of ["GET", "POST"]) {
      // Under /v1/models/ a GET route exists, so another method is a 405 there.
      const expect = path.startsWith("/v1/models/") && method !== "GET" ? [405] : [404];
      list.request(`${method} ${path.slice(0, 40)}`, method, path, expect);
    }
  }
}
