// The JSON API client: adds the bearer token and turns error bodies into ApiError.

const TOKEN_KEY = "modelpack.token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

export function getToken() {
  return localStorage.getItem(TOKEN_KEY) ?? "";
}

export function setToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

// `/api/v1` + a path built with `path` below, and optional query parameters.
export async function api(route, { method = "GET", body, query } = {}) {
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const search = query ? `?${new URLSearchParams(clean(query))}` : "";
  let response;
  try {
    response = await fetch(`/api/v1${route}${search}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new ApiError(0, "network_error", `Cannot reach the server (${error.message}).`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const error = data?.error ?? {};
    throw new ApiError(
      response.status,
      error.code ?? `http_${response.status}`,
      error.message ?? `${method} ${route} answered HTTP ${response.status}.`,
    );
  }
  return data;
}

function clean(query) {
  return Object.entries(query).filter(([, value]) => value != null && value !== "");
}

// A path from segments, each URL-encoded: path("models", "my model") -> "/models/my%20model".
export function path(...segments) {
  return segments.map((segment) => `/${encodeURIComponent(segment)}`).join("");
}

// A registry filter clause with the value quoted: eq("name", "it's") -> "name = 'it''s'".
export function eq(field, value) {
  return `${field} = '${String(value).replaceAll("'", "''")}'`;
}
