namespace Haven.Nbd;

/// <summary>Wire constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md).</summary>
internal static class NbdProtocol
{
    public const ulong InitPasswd = 0x4e42444d41474943;       // "NBDMAGIC"
    public const ulong IHaveOpt = 0x49484156454F5054;         // "IHAVEOPT"
    public const ulong OldstyleMagic = 0x00420281861253;
    public const ulong OptionReplyMagic = 0x3e889045565a9;
    public const uint RequestMagic = 0x25609513;
    public const uint SimpleReplyMagic = 0x67446698;
    public const uint StructuredReplyMagic = 0x668e33ef;

    // Handshake flags (server) and client flags.
    public const ushort FlagFixedNewstyle = 1 << 0;
    public const ushort FlagNoZeroes = 1 << 1;
    public const uint ClientFixedNewstyle = 1 << 0;
    public const uint ClientNoZeroes = 1 << 1;

    // Transmission flags.
    public const ushort FlagHasFlags = 1 << 0;
    public const ushort FlagReadOnly = 1 << 1;
    public const ushort FlagSendFlush = 1 << 2;
    public const ushort FlagSendFua = 1 << 3;
    public const ushort FlagSendWriteZeroes = 1 << 6;
    public const ushort FlagCanMultiConn = 1 << 8;

    // Options.
    public const uint OptExportName = 1;
    public const uint OptAbort = 2;
    public const uint OptGo = 7;
    public const uint OptStructuredReply = 8;
    public const uint OptSetMetaContext = 10;

    // Option replies.
    public const uint RepAck = 1;
    public const uint RepInfo = 3;
    public const uint RepMetaContext = 4;
    public const uint RepErrBit = 0x8000_0000;
    public const uint RepErrUnsup = RepErrBit | 1;
    public const uint RepErrPolicy = RepErrBit | 2;
    public const uint RepErrInvalid = RepErrBit | 3;
    public const uint RepErrPlatform = RepErrBit | 4;
    public const uint RepErrTlsReqd = RepErrBit | 5;
    public const uint RepErrUnknown = RepErrBit | 6;
    public const uint RepErrShutdown = RepErrBit | 7;
    public const uint RepErrBlockSizeReqd = RepErrBit | 8;
    public const uint RepErrTooBig = RepErrBit | 9;

    // NBD_OPT_GO information types.
    public const ushort InfoExport = 0;
    public const ushort InfoBlockSize = 3;

    // Commands.
    public const ushort CmdRead = 0;
    public const ushort CmdWrite = 1;
    public const ushort CmdDisc = 2;
    public const ushort CmdFlush = 3;
    public const ushort CmdWriteZeroes = 6;
    public const ushort CmdBlockStatus = 7;

    // Structured reply chunks.
    public const ushort ReplyFlagDone = 1;
    public const ushort ReplyTypeNone = 0;
    public const ushort ReplyTypeOffsetData = 1;
    public const ushort ReplyTypeOffsetHole = 2;
    public const ushort ReplyTypeBlockStatus = 5;
    public const ushort ReplyTypeErrorBit = 0x8000;
    public const ushort ReplyTypeError = ReplyTypeErrorBit | 1;
    public const ushort ReplyTypeErrorOffset = ReplyTypeErrorBit | 2;

    public static string OptionName(uint option) => option switch
    {
        OptExportName => "NBD_OPT_EXPORT_NAME",
        OptAbort => "NBD_OPT_ABORT",
        OptGo => "NBD_OPT_GO",
        OptStructuredReply => "NBD_OPT_STRUCTURED_REPLY",
        OptSetMetaContext => "NBD_OPT_SET_META_CONTEXT",
        _ => "NBD option " + option,
    };

    public static string ReplyName(uint reply) => reply switch
    {
        RepAck => "NBD_REP_ACK",
        RepInfo => "NBD_REP_INFO",
        RepMetaContext => "NBD_REP_META_CONTEXT",
        RepErrUnsup => "NBD_REP_ERR_UNSUP",
        RepErrPolicy => "NBD_REP_ERR_POLICY",
        RepErrInvalid => "NBD_REP_ERR_INVALID",
        RepErrPlatform => "NBD_REP_ERR_PLATFORM",
        RepErrTlsReqd => "NBD_REP_ERR_TLS_REQD",
        RepErrUnknown => "NBD_REP_ERR_UNKNOWN",
        RepErrShutdown => "NBD_REP_ERR_SHUTDOWN",
        RepErrBlockSizeReqd => "NBD_REP_ERR_BLOCK_SIZE_REQD",
        RepErrTooBig => "NBD_REP_ERR_TOO_BIG",
        _ => $"reply 0x{reply:x8}",
    };

    public static string CommandName(ushort command) => command switch
    {
        CmdRead => "NBD_CMD_READ",
        CmdWrite => "NBD_CMD_WRITE",
        CmdDisc => "NBD_CMD_DISC",
        CmdFlush => "NBD_CMD_FLUSH",
        CmdWriteZeroes => "NBD_CMD_WRITE_ZEROES",
        CmdBlockStatus => "NBD_CMD_BLOCK_STATUS",
        _ => "NBD command " + command,
    };
}
