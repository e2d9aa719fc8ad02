/** An error that maps to one HTTP status and SGLang's error body. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = defaultType(status),
    readonly param: string | null = null,
    readonly code: string | number = status,
  ) {
    super(message);
  }
}

function defaultType(status: number): string {
  if (status === 401) return "AuthenticationError";
  if (status === 404) return "NotFoundError";
  if (status === 413) return "RequestTooLargeError";
  if (status === 503) return "ServiceUnavailableError";
  if (status >= 500) return "InternalServerError";
  return "BadRequestError";
}

export function badRequest(message: string, param: string | null = null): ApiError {
  return new ApiError(400, message, "BadRequestError", param);
}

export function errorBody(e: ApiError) {
  return { object: "error", message: e.message, type: e.type, param: e.param, code: e.code };
}

/** Thrown while loading a model folder; main.ts prints it and exits 1. */
export class ModelFolderError extends Error {}
