-- AlterTable
ALTER TABLE "GraphMetadata" ALTER COLUMN "userId" DROP NOT NULL;
