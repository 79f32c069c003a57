using System.Text.Json;
using System.Text.Json.Serialization;

namespace Haven.Qemu.Qmp;

/// <summary>QMP argument names are kebab-case ("node-name", "job-id").</summary>
public static class QmpJson
{
    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.KebabCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };
}
