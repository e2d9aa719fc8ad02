export async function installService(_argv: string[]): Promise<number> { return 1; }
export async function uninstallService(_argv: string[]): Promise<number> { return 1; }
